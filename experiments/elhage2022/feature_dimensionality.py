"""Elhage et al. 2022, "the geometry of superposition": dimensions per feature and the sticky
feature dimensionalities, against sparsity.

    .venv/bin/python experiments/elhage2022/feature_dimensionality.py [--quick] [--out DIR]

n = 400 features in m = 30 dimensions (quick: 40 in 6), uniform importance; 1/(1 − S) on a
log grid from 1 to MAX_INVERSE_DENSITY = 20 (the range of the ARENA replication of this
figure; the marked sticky values all lie at 1/(1 − S) < 6, beyond which every feature's D_i
is below 3/8), one instance per sparsity, all trained as one batch. Saves per
sparsity m/‖W‖²_F (dimensions per feature) and every feature's dimensionality
D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)² (`geometry.feature_dimensionality`) with its norm, into
results.nc (default paper/data/elhage2022/feature_dimensionality). `tms-slt figures
elhage2022` draws them with the sticky values 1, 3/4, 2/3, 1/2, 2/5, 3/8 marked.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from tms_slt import geometry
from tms_slt.config import with_overrides
from tms_slt.data import TMSDistribution
from tms_slt.io import save_run
from tms_slt.paper import experiment_config, experiment_main
from tms_slt.training import train

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "feature_dimensionality.toml"
DEFAULT_OUT = HERE.parents[1] / "paper" / "data" / "elhage2022" / "feature_dimensionality"
MAX_INVERSE_DENSITY = 20.0
GRID = 24
QUICK = {
    "data.n_features": 40,
    "model.n_hidden": 6,
    "train.num_steps": 500,
    "train.batch_size": 256,
}


def run(out: Path, *, quick: bool = False) -> Path:
    start = time.perf_counter()
    base = experiment_config(CONFIG, out, QUICK if quick else {})
    inverse_density = np.geomspace(1, MAX_INVERSE_DENSITY, 8 if quick else GRID)
    sparsity = torch.tensor(1 - 1 / inverse_density, dtype=torch.float32).unsqueeze(-1)
    config = with_overrides(base, {"train.num_instances": len(inverse_density)})
    n, m = config.data.n_features, config.model.n_hidden
    q = TMSDistribution(n, sparsity=sparsity)
    traj = train(
        config, distribution=q, generator=torch.Generator().manual_seed(config.seed), progress=False
    )
    W = traj.W[-1]
    results = xr.Dataset(
        {
            "dims_per_feature": (
                ("inverse_density",),
                geometry.dims_per_feature(W).double().numpy(),
            ),
            "feature_dimensionality": (
                ("inverse_density", "feature"),
                geometry.feature_dimensionality(W).double().numpy(),
            ),
            "feature_norm": (("inverse_density", "feature"), W.norm(dim=-2).double().numpy()),
            "loss": (("inverse_density",), traj.loss[-1].double().numpy()),
        },
        coords={"inverse_density": inverse_density, "feature": np.arange(n)},
        attrs={"n_features": n, "n_hidden": m},
    )
    elapsed = time.perf_counter() - start
    return save_run(
        out,
        results,
        base,
        command="elhage2022/feature_dimensionality",
        quick=quick,
        wall_time_s=round(elapsed, 1),
    )


def main(argv: list[str] | None = None) -> int:
    return experiment_main(run, DEFAULT_OUT, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
