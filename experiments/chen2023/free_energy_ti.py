"""Chen et al. 2023, c = 6: basin free energies by thermodynamic integration in n.

    .venv/bin/python experiments/chen2023/free_energy_ti.py [--quick] [--out DIR]

For each of the 6-gon, 5+ and 5− basins (the points with that k-gon label), F_n by
`transitions.thermodynamic.basin_free_energy`: MALA chains confined to the basin on the exact
population loss with a standard normal prior, at a log ladder of n from 0.01 to 1e6,
integrated in log n from the prior mass of the basin at n → 0 (Monte Carlo), and again down
from the Laplace formula at n = 1e6 (`theory.kgon_free_energy`, every O(1) term), whose
difference (the closure) checks both. A non-asymptotic
reference for the crossings of `bayesian_transitions.py`. Saves results.nc + meta.json into
--out (default paper/data/chen2023/free_energy_ti).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from tms_slt.io import save_run
from tms_slt.paper import experiment_config, experiment_main
from tms_slt.transitions.thermodynamic import basin_free_energy

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "free_energy_ti.toml"
DEFAULT_OUT = HERE.parents[1] / "paper" / "data" / "chen2023" / "free_energy_ti"
BASINS = ((6, "-"), (5, "+"), (5, "-"))
#: (n_min, n_anchor, rungs, chains, burn-in, draws, prior draws)
LADDER = (0.01, 1e6, 80, 48, 1000, 3000, 2_000_000)
QUICK_LADDER = (0.01, 1e5, 6, 4, 50, 50, 20_000)
FIELDS = (
    "free_energy",
    "standard_error",
    "free_energy_laplace",
    "standard_error_laplace",
    "excess",
    "excess_se",
    "acceptance",
    "left_basin",
    "discretisation",
)


def run(out: Path, *, quick: bool = False) -> Path:
    start = time.perf_counter()
    config = experiment_config(CONFIG, out, {})
    generator = torch.Generator().manual_seed(config.seed)
    n_min, n_max, rungs, chains, burnin, draws, prior_draws = QUICK_LADDER if quick else LADDER
    ns = np.geomspace(n_min, n_max, rungs)
    found = [
        basin_free_energy(
            k,
            v,
            ns=ns,
            num_chains=chains,
            num_burnin=burnin,
            num_draws=draws,
            num_prior_draws=prior_draws,
            generator=generator,
        )
        for k, v in BASINS
    ]
    results = xr.Dataset(
        {
            **{f: (("basin", "n"), np.stack([getattr(r, f) for r in found])) for f in FIELDS},
            **{
                f: ("basin", np.array([getattr(r, f) for r in found]))
                for f in ("closure", "closure_se", "prior_mass")
            },
        },
        coords={"basin": [r.label for r in found], "n": ns},
        attrs={"num_chains": chains, "num_burnin": burnin, "num_draws": draws, "sigma": 1.0},
    )
    return save_run(
        out,
        results,
        config,
        command="chen2023/free_energy_ti",
        quick=quick,
        wall_time_s=round(time.perf_counter() - start, 1),
    )


def main(argv: list[str] | None = None) -> int:
    return experiment_main(run, DEFAULT_OUT, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
