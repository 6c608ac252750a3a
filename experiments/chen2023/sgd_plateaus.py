"""Chen et al. 2023, dynamical transitions: the k-gon plateaus SGD visits, with their LLCs.

    .venv/bin/python experiments/chen2023/sgd_plateaus.py [--quick] [--out DIR]

≥ 100 seeds of the paper's training setting (sgd_plateaus.toml), one batched run with one
instance per seed; the LLC at every checkpoint × seed with `estimate_llc`'s defaults (one
batched call), the observables of `transitions.track`, and every seed's transitions from
`transitions.detect_dynamical` (where the k-gon label, loss, ‖W‖²_F or LLC change, with
Δloss and ΔLLC across each). Saves results.nc (the tracked run, W and b at every checkpoint,
and one row per transition) + meta.json into --out (default paper/data/chen2023/sgd_plateaus).
`tms-slt figures chen2023` counts the transitions k → k′ and how many lower the loss and raise
the LLC (the paper's claim).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tms_slt.io import save_run
from tms_slt.paper import experiment_config, experiment_main
from tms_slt.sampling.llc import estimate_llc
from tms_slt.training import train
from tms_slt.transitions import detect_dynamical, track

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "sgd_plateaus.toml"
DEFAULT_OUT = HERE.parents[1] / "paper" / "data" / "chen2023" / "sgd_plateaus"
QUICK = {
    "data.n_train": 3000,
    "train.num_steps": 1500,
    "train.num_instances": 8,
    "train.num_checkpoints": 12,
    "llc.num_draws": 200,
    "llc.num_burnin": 100,
}
#: Transition fields saved, one row per detected transition.
FIELDS = ("instance", "location", "before", "after", "delta_loss", "delta_llc", "confidence")


def run(out: Path, *, quick: bool = False) -> Path:
    """Train every seed, estimate the LLC at every checkpoint, detect transitions, save."""
    start = time.perf_counter()
    config = experiment_config(CONFIG, out, QUICK if quick else {})
    generator = torch.Generator().manual_seed(config.seed)
    trajectory = train(config, generator=generator, progress=False)
    llc = estimate_llc(
        trajectory, **dataclasses.asdict(config.llc), generator=generator, progress=False
    )
    tracked = track(trajectory, llc)
    found = detect_dynamical(tracked)
    rows = {f: [_value(getattr(t, f)) for t in found] for f in FIELDS}
    rows["signals"] = [",".join(t.signals) for t in found]
    results = tracked.drop_vars(["gram_eigenvalues", "feature_dimensionality"]).assign(
        {f"transition_{k}": ("transition", np.asarray(v)) for k, v in rows.items()}
    )
    results.attrs = {"nbeta": float(llc.nbeta)}
    return save_run(
        out,
        results,
        config,
        command="chen2023/sgd_plateaus",
        quick=quick,
        wall_time_s=round(time.perf_counter() - start, 1),
    )


def _value(v):
    """A transition field as a netCDF-storable value (None → NaN or "")."""
    if v is None:
        return np.nan
    return v


def main(argv: list[str] | None = None) -> int:
    return experiment_main(run, DEFAULT_OUT, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
