"""Chen et al. 2023, the k-gon table: every regular k-gon critical point for c = 5, 6, 8.

    .venv/bin/python experiments/chen2023/kgon_table.py [--quick] [--out DIR]

For each c and each k-gon 2 ≤ k ≤ c with every sign pattern of the unrepresented biases
(Chen et al.'s variants 5+, 5−, 4++, …): the exact population loss, ‖∇L‖, the Hessian's index
and nullity and `theory.kgon_llc` (λ = rank(∇²L)/2 at a Morse–Bott minimum, or why not). At
every local minimum (index 0), the point refined to the minimum of L_n on one training set
(`training.refine_minimum`, n = data.n_train) and λ̂ ± SE from `estimate_llc` with its
defaults, the user's path; all minima of one c are anchors of one batched call. Saves
results.nc + meta.json into --out (default paper/data/chen2023/kgon_table); `tms-slt figures
chen2023` ranks the minima by the free energy F_n = nL + λ log n and writes the tables.
"""

from __future__ import annotations

import dataclasses
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
from tms_slt.sampling.llc import estimate_llc
from tms_slt.theory import kgon_critical_point, kgon_llc_report, kgon_variants
from tms_slt.training import refine_minimum

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "kgon_table.toml"
DEFAULT_OUT = HERE.parents[1] / "paper" / "data" / "chen2023" / "kgon_table"
C_VALUES = (5, 6, 8)
QUICK_C_VALUES = (6,)
#: The bias of every "−" unused feature at which λ is estimated: any β < 0 is on the same flat
#: family (same loss and λ); at the default −1/(2c), and still at −0.5, the chains at n = 10⁴
#: reach β ≥ 0 and the lower loss beyond, and λ̂ comes out imprecise and low.
DEAD_BIAS = -1.0
QUICK = {"data.n_train": 2000, "llc.num_draws": 300, "llc.num_burnin": 100}


def _rows(c: int) -> list[dict]:
    rows = []
    for k in range(c, 1, -1):
        for v in kgon_variants(k, c):
            r = kgon_llc_report(k, c, v or "-")
            rows.append(
                {
                    "c": c,
                    "k": k,
                    "label": r.label,
                    "variant": v,
                    "loss": r.loss,
                    "grad_norm": r.grad_norm,
                    "index": r.index,
                    "nullity": r.nullity,
                    "llc_theory": np.nan if r.llc is None else float(r.llc),
                    "why": r.reason,
                }
            )
    return rows


def _estimate(rows: list[dict], config, generator: torch.Generator) -> None:
    """λ̂ at the refined minimum of every index-0 row (in place), one batched call."""
    minima = [r for r in rows if r["index"] == 0]
    c = rows[0]["c"]
    points = [
        kgon_critical_point(r["k"], c, variant=r["variant"] or "-", dead_bias=DEAD_BIAS)
        for r in minima
    ]
    W0 = torch.tensor(np.stack([W for W, _ in points]), dtype=torch.float32)
    b0 = torch.tensor(np.stack([b for _, b in points]), dtype=torch.float32)
    q = TMSDistribution(c, active_features=1)
    x = q.sample(config.data.n_train, generator=generator)
    W, b = refine_minimum(W0, b0, x)
    labels = geometry.kgon_labels(W, b)
    result = estimate_llc(
        (W, b), dataset=x, **dataclasses.asdict(config.llc), generator=generator, progress=False
    )
    diag = result.diagnostics
    for i, r in enumerate(minima):
        r["refined_label"] = str(labels[i])
        r["refined_shift"] = float(torch.cat([(W - W0)[i].ravel(), (b - b0)[i]]).norm())
        r["llc_hat"] = float(result.mean[i])
        r["llc_se"] = float(diag["standard_error"].values[i])
        r["llc_reliable"] = bool(diag["reliable"].values[i])
        r["llc_reasons"] = str(diag["reasons"].values[i])


def run(out: Path, *, quick: bool = False) -> Path:
    """Every k-gon of every c: exact quantities, then λ̂ at the minima; save into `out`."""
    start = time.perf_counter()
    base = experiment_config(CONFIG, out, QUICK if quick else {})
    generator = torch.Generator().manual_seed(base.seed)
    rows = []
    for c in QUICK_C_VALUES if quick else C_VALUES:
        config = with_overrides(base, {"data.n_features": c})
        block = _rows(c)
        _estimate(block, config, generator)
        rows += block
    columns = {
        key: [r.get(key, _missing(key)) for r in rows]
        for key in [
            *rows[0].keys(),
            "refined_label",
            "refined_shift",
            "llc_hat",
            "llc_se",
            "llc_reliable",
            "llc_reasons",
        ]
    }
    results = xr.Dataset(
        {key: ("row", np.asarray(values)) for key, values in columns.items()},
        attrs={"n_train": base.data.n_train},
    )
    return save_run(
        out,
        results,
        base,
        command="chen2023/kgon_table",
        quick=quick,
        wall_time_s=round(time.perf_counter() - start, 1),
    )


def _missing(key: str):
    """The value of an estimate column at a row that was not estimated (a saddle)."""
    return {"llc_reliable": False, "refined_label": "", "llc_reasons": "saddle"}.get(key, np.nan)


def main(argv: list[str] | None = None) -> int:
    return experiment_main(run, DEFAULT_OUT, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
