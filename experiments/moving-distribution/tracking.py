"""When the true distribution moves during training: tracking, lag and hysteresis (issue #13).

    .venv/bin/python experiments/moving-distribution/tracking.py [--quick] [--out DIR]

Elhage et al.'s n = 5, m = 2 model (tracking.toml). Static: at each sparsity of a grid the
distribution is held fixed and every seed trains to the end (one batched run); the median
number of represented features k (‖W_i‖ > 0.5) against S gives the static transition S*
where k reaches 5 (the pentagon), and the steps a seed needs to settle there (the plateau
time τ). Moving: after a warm-up at S_LOW, a cyclic ramp S_LOW → S_HIGH → S_LOW
(`schedules.Ramp`, shape "cyclic") of each duration in CYCLES (slow, medium, fast relative
to τ), seeds as instances; and "held": a step from S_LOW to S_HIGH, then held for
CYCLES["held"] steps (does the pentagon come late, or never?). Per instance: S where k
first reaches 5 on the way up (S_up), S where it falls back below on the way down
(S_down); the lag S_up − S*, and the loop width S_up − S_down (hysteresis). The detector
(`detect_dynamical` with the ramp as `schedule`) labels every transition's driver. The
medium run also gets λ̂ at every 4th checkpoint (defaults; each checkpoint's own q_t as
data). Saves results.nc + meta.json into --out (default paper/data/moving-distribution/tracking).
"""

from __future__ import annotations

import json
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
from tms_slt.schedules import DistributionSchedule, Ramp
from tms_slt.training import train
from tms_slt.transitions import detect_dynamical, track

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "tracking.toml"
DEFAULT_OUT = HERE.parents[1] / "paper" / "data" / "moving-distribution" / "tracking"
S_LOW, S_HIGH = 0.6, 0.97
STATIC_GRID = 12
WARMUP = 3000
#: Full cycle lengths (up and back) in steps: slow, medium, fast; for "held", how long S_HIGH
#: is held after the step.
CYCLES = {"slow": 24000, "medium": 6000, "fast": 1500, "held": 20000}
CHECKPOINTS = 240
LLC_SPEED = "medium"
QUICK = {"train.num_steps": 300, "train.num_instances": 2, "train.batch_size": 256}
QUICK_CYCLES = {"medium": 300, "held": 200}
QUICK_WARMUP = 150


def static_grid(num: int) -> np.ndarray:
    """Sparsities from S_LOW to S_HIGH, evenly spaced in log density 1 − S."""
    return 1 - np.geomspace(1 - S_LOW, 1 - S_HIGH, num)


def static(config, grid: np.ndarray, generator) -> xr.Dataset:
    """Train every (S, seed) at fixed S; the represented count along training."""
    seeds = config.train.num_instances
    s = torch.tensor(grid, dtype=torch.float32).repeat_interleave(seeds).unsqueeze(-1)
    cfg = with_overrides(config, {"train.num_instances": len(s)})
    q = TMSDistribution(5, sparsity=s, importance_decay=config.data.importance_decay)
    traj = train(cfg, distribution=q, generator=generator, progress=False)
    k = (geometry.column_norms(traj.W) > 0.5).sum(-1).numpy()  # (checkpoint, S·seed)
    fc = geometry.feature_count(traj.W).double().numpy()
    shape = (len(traj.steps), len(grid), seeds)
    return xr.Dataset(
        {
            "static_k": (("static_checkpoint", "sparsity", "seed"), k.reshape(shape)),
            "static_feature_count": (
                ("static_checkpoint", "sparsity", "seed"),
                fc.reshape(shape),
            ),
        },
        coords={
            "static_checkpoint": traj.steps.numpy(),
            "sparsity": grid,
            "seed": np.arange(seeds),
        },
    )


def moving(config, speed: str, cycle: int, warmup: int, generator, *, with_llc: bool, quick: bool):
    """One cyclic ramp after a warm-up; tracked observables, S at each checkpoint, the
    detector's transitions, and λ̂ at every 4th checkpoint when `with_llc`."""
    shape = "step" if speed == "held" else "cyclic"
    ramp = Ramp("sparsity", S_LOW, S_HIGH, begin=warmup, finish=warmup + cycle, shape=shape)
    schedule = DistributionSchedule(5, (ramp,), importance_decay=config.data.importance_decay)
    cfg = with_overrides(
        config,
        {
            "train.num_steps": warmup + cycle,
            "train.num_checkpoints": 30 if quick else CHECKPOINTS,
        },
    )
    traj = train(cfg, distribution=schedule, generator=generator, progress=False)
    tracked = track(traj).drop_vars(["feature_dimensionality", "regular_residual"])
    tracked.attrs = {}
    steps = traj.steps.numpy()
    tracked["schedule_sparsity"] = ("checkpoint", [float(ramp.value_at(int(t))) for t in steps])
    represented = (geometry.column_norms(traj.W) > 0.5).sum(-1).numpy()
    tracked["k"] = (("checkpoint", "instance"), represented)
    if with_llc:
        every = slice(None, None, 4)
        sub = traj.take(list(range(len(steps)))[every])
        data = torch.stack(
            [
                schedule(int(t)).sample(1000 if quick else 10_000, generator=generator)
                for t in sub.steps
            ]
        )  # (checkpoint, N, n): each checkpoint's own q_t
        data = data.unsqueeze(1).expand(-1, sub.num_instances, -1, -1)
        llc = estimate_llc(
            (sub.W, sub.b),
            dataset=data,
            importance=sub.importance.float(),
            num_draws=60 if quick else "auto",
            num_burnin=30 if quick else "auto",
            generator=generator,
            progress=False,
        )
        full = np.full((len(steps), sub.num_instances), np.nan)
        mean, se = full.copy(), full.copy()
        rel = np.zeros_like(full, dtype=bool)
        mean[every] = llc.mean.numpy()
        se[every] = llc.diagnostics["standard_error"].transpose("dim_0", "dim_1").values
        rel[every] = llc.diagnostics["reliable"].transpose("dim_0", "dim_1").values
        tracked["llc_mean"] = (("checkpoint", "instance"), mean)
        tracked["llc_se"] = (("checkpoint", "instance"), se)
        tracked["llc_reliable"] = (("checkpoint", "instance"), rel)
    tracked.attrs["schedule"] = json.dumps(schedule.to_dict())  # q_t, reloadable by from_dict
    found = detect_dynamical(tracked, schedule=schedule)
    fields = ("instance", "location", "before", "after", "driver", "confidence")
    for f in fields:
        tracked[f"transition_{f}"] = (
            "transition",
            np.asarray(["" if getattr(t, f) is None else getattr(t, f) for t in found]),
        )
    return tracked


def run(out: Path, *, quick: bool = False) -> Path:
    start = time.perf_counter()
    config = experiment_config(CONFIG, out, QUICK if quick else {})
    generator = torch.Generator().manual_seed(config.seed)
    results = static(config, static_grid(3 if quick else STATIC_GRID), generator)
    cycles = QUICK_CYCLES if quick else CYCLES
    warmup = QUICK_WARMUP if quick else WARMUP
    schedules = {}
    for speed, cycle in cycles.items():
        tracked = moving(
            config, speed, cycle, warmup, generator, with_llc=speed == LLC_SPEED, quick=quick
        )
        renamed = tracked.rename(
            {
                **{v: f"{speed}_{v}" for v in tracked.data_vars},
                "checkpoint": f"{speed}_checkpoint",
                "transition": f"{speed}_transition",
            }
        )
        schedules[speed] = renamed.attrs.pop("schedule")
        results = xr.merge([results, renamed.drop_vars(["hidden", "feature"], errors="ignore")])
    results.attrs = {
        "s_low": S_LOW,
        "s_high": S_HIGH,
        "warmup": warmup,
        "speeds": list(cycles),
        "cycles": list(cycles.values()),
        **{f"{speed}_schedule": text for speed, text in schedules.items()},
    }
    return save_run(
        out,
        results,
        config,
        command="moving-distribution/tracking",
        quick=quick,
        wall_time_s=round(time.perf_counter() - start, 1),
    )


def main(argv: list[str] | None = None) -> int:
    return experiment_main(run, DEFAULT_OUT, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
