"""Elhage et al. 2022's phase diagram of 3 features in 2 hidden dimensions, trained.

    .venv/bin/python experiments/elhage2022/phase_diagram_3in2.py [--quick] [--out DIR]

Features 1 and 2 have importance 1, feature 3 importance r (0.1 … 10, log); all have density
p = 1 − S (0.01 … 1, log). Every cell × seed is one instance of a single batched training run.
Each trained model is labelled by what happens to feature 3 (`phase_3in2`): "not represented"
(‖W₃‖ ≤ 0.5), "dedicated" (represented, with at most two features represented: it has a
dimension to itself, another feature gave way) or "superposition" (all three represented in
two dimensions); the seeds vote. There is no closed form for this diagram in `theory`, so
only the trained one is drawn. Saves results.nc and meta.json into --out (default
paper/data/elhage2022/phase_diagram_3in2).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
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
CONFIG = HERE / "phase_diagram_3in2.toml"
DEFAULT_OUT = HERE.parents[1] / "paper" / "data" / "elhage2022" / "phase_diagram_3in2"
QUICK = {"train.num_steps": 300, "train.batch_size": 256}


def phase_3in2(W: torch.Tensor) -> np.ndarray:
    """(...,) what feature 3 does in W (..., 2, 3); see the module docstring."""
    rep = geometry.represented(W)
    k = rep.sum(-1)
    out = np.where(k.numpy() <= 2, "dedicated", "superposition").astype(object)
    out[~rep[..., 2].numpy()] = "not represented"
    return out.astype(str)


def grid(quick: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """(relative importances of feature 3, densities, seeds)."""
    k = 4 if quick else 11
    return np.logspace(-1, 1, k), np.logspace(-2, 0, k), 1 if quick else 2


def run(out: Path, *, quick: bool = False) -> Path:
    start = time.perf_counter()
    base = experiment_config(CONFIG, out, QUICK if quick else {})
    r, p, seeds = grid(quick)
    R, P, _ = np.meshgrid(r, p, np.arange(seeds), indexing="ij")  # (r, p, seed)
    ones = np.ones(R.size)
    importance = torch.tensor(np.stack([ones, ones, R.ravel()], -1), dtype=torch.float32)
    sparsity = torch.tensor(1 - P.ravel(), dtype=torch.float32).unsqueeze(-1)
    config = with_overrides(base, {"train.num_instances": R.size})
    q = TMSDistribution(3, sparsity=sparsity, importance=importance)
    traj = train(
        config, distribution=q, generator=torch.Generator().manual_seed(config.seed), progress=False
    )
    W = traj.W[-1]
    labels = phase_3in2(W).reshape(len(r), len(p), seeds)
    vote = np.empty((len(r), len(p)), dtype=object)
    for i in range(len(r)):
        for j in range(len(p)):
            vote[i, j] = Counter(labels[i, j].tolist()).most_common(1)[0][0]
    results = xr.Dataset(
        {
            "W": (
                ("relative_importance", "density", "seed", "hidden", "feature"),
                W.double().numpy().reshape(len(r), len(p), seeds, 2, 3),
            ),
            "label": (("relative_importance", "density", "seed"), labels),
            "empirical": (("relative_importance", "density"), vote.astype(str)),
            "loss": (
                ("relative_importance", "density", "seed"),
                traj.loss[-1].double().numpy().reshape(len(r), len(p), seeds),
            ),
        },
        coords={"relative_importance": r, "density": p, "seed": np.arange(seeds)},
    )
    return save_run(
        out,
        results,
        base,
        command="elhage2022/phase_diagram_3in2",
        quick=quick,
        wall_time_s=round(time.perf_counter() - start, 1),
    )


def main(argv: list[str] | None = None) -> int:
    return experiment_main(run, DEFAULT_OUT, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
