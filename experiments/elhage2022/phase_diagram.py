"""Elhage et al. 2022's phase diagram of 2 features in 1 hidden dimension, trained and exact.

    .venv/bin/python experiments/elhage2022/phase_diagram.py [--quick] [--out DIR]

x: relative importance r of feature 2 (0.1 … 10, log), y: feature density p = 1 − S (0.01 … 1,
log). Every cell × seed is one instance of a single batched training run (per-instance
importance and sparsity). Each trained model is labelled by `transitions.two_feature_labels`
(feature 2 not represented = "feature_1", feature 2 gets the dimension = "feature_2", both
antipodal = "antipodal"); the seeds vote. Beside it, the exact diagram
(`transitions.two_feature_phase`) and its boundary bisected along p at every r
(`transitions.two_feature_boundary`). Saves results.nc and meta.json into --out (default
paper/data/elhage2022/phase_diagram). `tms-slt figures elhage2022` draws it.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from tms_slt.config import with_overrides
from tms_slt.data import TMSDistribution
from tms_slt.io import save_run
from tms_slt.paper import experiment_config, experiment_main
from tms_slt.training import train
from tms_slt.transitions import (
    superposition_onset_density,
    two_feature_labels,
    two_feature_phase,
)

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "phase_diagram.toml"
DEFAULT_OUT = HERE.parents[1] / "paper" / "data" / "elhage2022" / "phase_diagram"
QUICK = {"train.num_steps": 400, "train.batch_size": 256}


def grid(quick: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """(relative importances, densities, seeds)."""
    k = 5 if quick else 13
    return np.logspace(-1, 1, k), np.logspace(-2, 0, k), 1 if quick else 2


def run(out: Path, *, quick: bool = False) -> Path:
    start = time.perf_counter()
    base = experiment_config(CONFIG, out, QUICK if quick else {})
    r, p, seeds = grid(quick)
    R, P, _ = np.meshgrid(r, p, np.arange(seeds), indexing="ij")  # (r, p, seed)
    importance = torch.tensor(np.stack([np.ones(R.size), R.ravel()], -1), dtype=torch.float32)
    sparsity = torch.tensor(1 - P.ravel(), dtype=torch.float32).unsqueeze(-1)
    config = with_overrides(base, {"train.num_instances": R.size})
    q = TMSDistribution(2, sparsity=sparsity, importance=importance)
    traj = train(
        config, distribution=q, generator=torch.Generator().manual_seed(config.seed), progress=False
    )
    W = traj.W[-1].double().numpy().reshape(len(r), len(p), seeds, 1, 2)
    labels = two_feature_labels(W)  # (r, p, seed)
    vote = np.vectorize(lambda *_: "", otypes=[object])(np.zeros((len(r), len(p))))
    for i in range(len(r)):
        for j in range(len(p)):
            vote[i, j] = Counter(labels[i, j].tolist()).most_common(1)[0][0]
    theory = two_feature_phase(r[:, None], p[None, :])
    boundaries = _theory_boundaries(r, p, theory, tol=0.1 if quick else 0.01)
    results = xr.Dataset(
        {
            "W": (("relative_importance", "density", "seed", "hidden", "feature"), W),
            "label": (("relative_importance", "density", "seed"), labels.astype(str)),
            "empirical": (("relative_importance", "density"), vote.astype(str)),
            "theory": (("relative_importance", "density"), np.asarray(theory, dtype=str)),
            "boundary_density": (("relative_importance",), boundaries),
            "loss": (
                ("relative_importance", "density", "seed"),
                traj.loss[-1].double().numpy().reshape(len(r), len(p), seeds),
            ),
        },
        coords={"relative_importance": r, "density": p, "seed": np.arange(seeds)},
    )
    elapsed = time.perf_counter() - start
    return save_run(
        out,
        results,
        base,
        command="elhage2022/phase_diagram",
        quick=quick,
        wall_time_s=round(elapsed, 1),
    )


def _theory_boundaries(
    r: np.ndarray, p: np.ndarray, theory: np.ndarray, *, tol: float
) -> np.ndarray:
    """Per r: the density where the exact phase turns to or from "antipodal" (superposition),
    bisected between the grid cells around the first such change (NaN where there is none)."""
    out = np.full(len(r), np.nan)
    rows, lo, hi = [], [], []
    for i in range(len(r)):
        change = np.flatnonzero((theory[i, :-1] == "antipodal") != (theory[i, 1:] == "antipodal"))
        if change.size:
            rows.append(i)
            lo.append(p[change[0]])
            hi.append(p[change[0] + 1])
    if rows:
        out[rows] = superposition_onset_density(r[rows], np.array(lo), np.array(hi), tol=tol)
    return out


def main(argv: list[str] | None = None) -> int:
    return experiment_main(run, DEFAULT_OUT, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
