"""Elhage et al. 2022, the first figure: superposition as a function of sparsity (n = 5, m = 2).

    .venv/bin/python experiments/elhage2022/superposition_vs_sparsity.py [--quick] [--out DIR]

Importance 0.9^i, S ∈ {0, 0.7, 0.9, 0.97, 0.99, 0.997}, a linear and a ReLU model; every
sparsity × seed of one activation is one batched training run (instances), online data.
Saves results.nc (W, b, loss per activation × sparsity × seed, and the quantified geometry:
features represented ‖W_i‖ > 0.5, ‖W‖²_F, the k-gon label) and meta.json into --out
(default paper/data/elhage2022/superposition_vs_sparsity; quick mode needs --out).
`tms-slt figures elhage2022` draws the figure and table from it.
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
CONFIG = HERE / "superposition_vs_sparsity.toml"
DEFAULT_OUT = HERE.parents[1] / "paper" / "data" / "elhage2022" / "superposition_vs_sparsity"
SPARSITIES = (0.0, 0.7, 0.9, 0.97, 0.99, 0.997)
ACTIVATIONS = ("linear", "relu")
#: A feature is represented when its column has norm above this (Elhage et al.'s figures).
REPRESENTED = 0.5
QUICK = {"train.num_steps": 300, "train.batch_size": 256}


def run(out: Path, *, quick: bool = False, seeds: int | None = None) -> Path:
    """Train every (activation, sparsity, seed), quantify the geometry, save into `out`."""
    start = time.perf_counter()
    base = experiment_config(CONFIG, out, QUICK if quick else {})
    seeds = seeds or (1 if quick else 3)
    n = base.data.n_features
    sparsity = torch.tensor(SPARSITIES).repeat_interleave(seeds).unsqueeze(-1)  # (I, 1)
    per_activation = []
    for activation in ACTIVATIONS:
        config = with_overrides(
            base, {"model.activation": activation, "train.num_instances": len(sparsity)}
        )
        q = TMSDistribution(n, sparsity=sparsity, importance_decay=base.data.importance_decay)
        traj = train(
            config,
            distribution=q,
            generator=torch.Generator().manual_seed(config.seed),
            progress=False,
        )
        W, b = traj.W[-1], traj.b[-1]  # (I, m, n), (I, n)
        labels = geometry.kgon_labels(W, b).reshape(len(SPARSITIES), seeds)
        norms = W.norm(dim=-2)
        ds = xr.Dataset(
            {
                "W": (("sparsity", "seed", "hidden", "feature"), _grid(W, seeds)),
                "b": (("sparsity", "seed", "feature"), _grid(b, seeds)),
                "loss": (("sparsity", "seed"), _grid(traj.loss[-1], seeds)),
                "feature_count": (("sparsity", "seed"), _grid(geometry.feature_count(W), seeds)),
                "represented": (
                    ("sparsity", "seed"),
                    _grid((norms > REPRESENTED).sum(-1), seeds).astype(int),
                ),
                "kgon": (("sparsity", "seed"), labels.astype(str)),
            },
            coords={"sparsity": list(SPARSITIES), "seed": np.arange(seeds)},
        )
        per_activation.append(ds)
    results = xr.concat(per_activation, dim=xr.DataArray(list(ACTIVATIONS), dims="activation"))
    results["importance"] = ("feature", base.data.importance_decay ** np.arange(n))
    elapsed = time.perf_counter() - start
    return save_run(
        out,
        results,
        base,
        command="elhage2022/superposition_vs_sparsity",
        quick=quick,
        wall_time_s=round(elapsed, 1),
    )


def _grid(t: torch.Tensor, seeds: int) -> np.ndarray:
    """(sparsity·seed, ...) -> (sparsity, seed, ...)."""
    return t.detach().double().numpy().reshape(-1, seeds, *t.shape[1:])


def main(argv: list[str] | None = None) -> int:
    return experiment_main(run, DEFAULT_OUT, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
