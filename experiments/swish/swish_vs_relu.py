"""swish(γ) = x·σ(γx) against ReLU: the γ beyond which TMS configurations are discrete again.

    .venv/bin/python experiments/swish/swish_vs_relu.py [--quick] [--out DIR]

For γ ∈ GAMMAS and ReLU (γ = ∞), two settings, every (row, seed) an instance of one
batched run per γ: "elhage", n = 5, m = 2, importance 0.9^i at the sparsities SPARSITIES
(swish_vs_relu.toml); "chen", c = 6 with one active feature, SGD on a fixed training set
(Chen et al. 2023). Per instance at the end: the represented count k (‖W_i‖ > 0.5), the
k-gon label, the regular residual of `geometry.classify`, the *stray norm* (the largest
‖W_i‖ among the columns that are not represented: 0 where the others are cleanly off, the
"messy fifth column" where not) and the loss; for "chen" also λ̂ with `estimate_llc`'s
defaults. Saves results.nc + meta.json into --out (default paper/data/swish/swish_vs_relu).
"""

from __future__ import annotations

import math
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
from tms_slt.training import train

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "swish_vs_relu.toml"
DEFAULT_OUT = HERE.parents[1] / "paper" / "data" / "swish" / "swish_vs_relu"
GAMMAS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, math.inf)  # inf: ReLU
SPARSITIES = (0.7, 0.9, 0.97, 0.99)
CHEN = {
    "data.n_features": 6,
    "data.sparsity": None,
    "data.active_features": 1,
    "data.importance_decay": 1.0,
    "data.n_train": 10_000,
    "train.optimizer": "sgd",
    "train.lr": 0.1,
    "train.batch_size": 100,
    "train.num_steps": 10_000,
}
SEEDS = {"elhage": 3, "chen": 8}
QUICK = {"train.num_steps": 150, "train.batch_size": 256}
QUICK_CHEN = {"train.num_steps": 150, "data.n_train": 1000}
QUICK_GAMMAS = (5.0, math.inf)


def _config(base, gamma: float, overrides: dict, instances: int):
    act = {"model.activation": "relu"} if math.isinf(gamma) else {"model.swish_sharpness": gamma}
    return with_overrides(base, {**overrides, **act, "train.num_instances": instances})


def _geometry(W: torch.Tensor, b: torch.Tensor) -> dict[str, np.ndarray]:
    norms = geometry.column_norms(W).double()
    rep = norms > 0.5
    stray = torch.where(rep, torch.zeros_like(norms), norms).amax(-1)
    configs = geometry.classify_batch(W, b)
    return {
        "k": rep.sum(-1).numpy(),
        "label": geometry.kgon_labels(W, b).astype(str),
        "regular_residual": np.vectorize(lambda c: c.regular_residual, otypes=[float])(configs),
        "stray_norm": stray.numpy(),
    }


def _setting(name: str, base, overrides: dict, gammas, seeds: int, generator, quick: bool):
    rows = list(SPARSITIES) if name == "elhage" else [1.0]
    per_gamma = []
    for gamma in gammas:
        config = _config(base, gamma, overrides, len(rows) * seeds)
        q = None
        if name == "elhage":
            s = torch.tensor(rows).repeat_interleave(seeds).unsqueeze(-1)
            q = TMSDistribution(5, sparsity=s, importance_decay=base.data.importance_decay)
        traj = train(config, distribution=q, generator=generator, progress=False)
        W, b = traj.W[-1], traj.b[-1]
        out = {k: v.reshape(len(rows), seeds) for k, v in _geometry(W, b).items()}
        out["loss"] = traj.loss[-1].double().numpy().reshape(len(rows), seeds)
        if name == "chen":
            llc = estimate_llc(
                traj.take([-1]),
                activation=config.model.activation,
                swish_sharpness=config.model.swish_sharpness,
                num_draws=100 if quick else "auto",
                num_burnin=50 if quick else "auto",
                generator=generator,
                progress=False,
            )
            out["llc"] = llc.mean.double().numpy().reshape(len(rows), seeds)
            out["llc_reliable"] = (
                llc.diagnostics["reliable"].values.astype(bool).reshape(len(rows), seeds)
            )
        per_gamma.append(
            xr.Dataset(
                {k: ((f"{name}_row", "seed"), v) for k, v in out.items()},
                coords={f"{name}_row": rows, "seed": np.arange(seeds)},
            )
        )
    return (
        xr.concat(per_gamma, dim=xr.DataArray(list(gammas), dims="gamma"))
        .rename({v: f"{name}_{v}" for v in per_gamma[0].data_vars})
        .rename({"seed": f"{name}_seed"})
    )


def run(out: Path, *, quick: bool = False) -> Path:
    start = time.perf_counter()
    base = experiment_config(CONFIG, out, QUICK if quick else {})
    generator = torch.Generator().manual_seed(base.seed)
    gammas = QUICK_GAMMAS if quick else GAMMAS
    seeds = {k: (2 if quick else v) for k, v in SEEDS.items()}
    elhage = _setting("elhage", base, {}, gammas, seeds["elhage"], generator, quick)
    chen_overrides = {**CHEN, **(QUICK_CHEN if quick else {})}
    chen = _setting("chen", base, chen_overrides, gammas, seeds["chen"], generator, quick)
    results = xr.merge([elhage, chen])
    return save_run(
        out,
        results,
        base,
        command="swish/swish_vs_relu",
        quick=quick,
        wall_time_s=round(time.perf_counter() - start, 1),
    )


def main(argv: list[str] | None = None) -> int:
    return experiment_main(run, DEFAULT_OUT, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
