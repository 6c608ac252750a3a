"""When the true distribution moves during training: tracking, lag and hysteresis (issue #13).

    .venv/bin/python experiments/moving-distribution/tracking.py [--quick] [--out DIR]

Two settings (tracking.toml: Adam, online data): Elhage et al.'s n = 5, m = 2 model with its
sparsity S moving ("n5", importance 0.9^i), and Chen et al.'s c = 6 features, one active per
sample, with the importance decay r of I_i = r^i moving ("c6"). In both, high values of the
parameter favour the pentagon (k = 5 features with ‖W_i‖ > 0.5) and low values fewer
features.

Static: on a grid of the parameter, the distribution is held and every seed trains to the end
(one batched run per setting); the median k against the parameter gives the static transition
v* where k reaches 5, and the steps a seed needs to settle (the plateau time τ).

Moving (`schedules.Ramp`, seeds as instances): after a warm-up at one end, a cyclic ramp to the
other end and back, of each duration in CYCLES (slow, medium, fast relative to τ). "up" runs
start at the low end (fewer features) and "down" runs at the pentagon's end, so a hysteresis
loop shows from whichever side the geometry can leave; "held" is a step from the low end to
the high one, then held. The detector (`detect_dynamical` with the ramp as `schedule`) labels
every transition's driver. The LLC_RUN gets λ̂ at every 4th checkpoint, each at the minimum of
L_n nearest the checkpoint (`training.refine_minimum`) on data from its own q_t, with
`estimate_llc`'s defaults. Saves results.nc + meta.json into --out (default
paper/data/moving-distribution/tracking).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from tms_slt import geometry
from tms_slt.config import with_overrides
from tms_slt.data import TMSDistribution
from tms_slt.io import save_run
from tms_slt.models import get_activation, reconstruction_loss
from tms_slt.paper import experiment_config, experiment_main
from tms_slt.paper.moving import keeps_configuration
from tms_slt.sampling.llc import estimate_llc
from tms_slt.sampling.susceptibility import coupled_sparsity_samples, posterior_response
from tms_slt.schedules import DistributionSchedule, Ramp
from tms_slt.training import refine_minimum, train
from tms_slt.transitions import detect_dynamical, track

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "tracking.toml"
DEFAULT_OUT = HERE.parents[1] / "paper" / "data" / "moving-distribution" / "tracking"


@dataclass(frozen=True)
class Setting:
    """A distribution family and the parameter that moves: `low` favours fewer features,
    `high` the pentagon."""

    n_features: int
    parameter: str
    low: float
    high: float
    active_features: int | None = None
    importance_decay: float = 1.0

    def grid(self, num: int) -> np.ndarray:
        """Ascending static grid: even in log density 1 − S, or in log r."""
        if self.parameter == "sparsity":
            return 1 - np.geomspace(1 - self.low, 1 - self.high, num)
        return np.geomspace(self.low, self.high, num)

    def distribution(self, values: torch.Tensor) -> TMSDistribution:
        """Held at `values` (one per instance, shape (I, 1))."""
        n = self.n_features
        if self.parameter == "sparsity":
            return TMSDistribution(
                n, sparsity=values.float(), importance_decay=self.importance_decay
            )
        importance = (values.double() ** torch.arange(n)).float()
        return TMSDistribution(n, active_features=self.active_features, importance=importance)

    def schedule(self, ramp: Ramp) -> DistributionSchedule:
        return DistributionSchedule(
            self.n_features,
            (ramp,),
            active_features=self.active_features,
            importance_decay=self.importance_decay,
        )


SETTINGS = {
    "n5": Setting(5, "sparsity", 0.6, 0.97, importance_decay=0.9),
    "c6": Setting(6, "importance_decay", 0.45, 1.0, active_features=1),
}
STATIC_GRID = 12
WARMUP = 3000
#: Full cycle lengths (out and back) in steps; for "held", how long the far end is held.
CYCLES = {"slow": 24000, "medium": 6000, "fast": 1500, "held": 20000}
#: (setting, direction, speed) of every moving run.
RUNS = [
    *(("n5", "up", speed) for speed in ("slow", "medium", "fast", "held")),
    *(("n5", "down", speed) for speed in ("slow", "medium", "fast")),
    *(
        ("c6", direction, speed)
        for direction in ("up", "down")
        for speed in ("slow", "medium", "fast")
    ),
]
LLC_RUN = "n5_down_medium"
CHECKPOINTS = 240
LLC_SAMPLES = 10_000
#: The susceptibility's SGLD thinning and the half width δ of its difference in S.
KEEP_EVERY = 40
SUSCEPTIBILITY_STEP = 0.005
QUICK = {"train.num_steps": 300, "train.num_instances": 2, "train.batch_size": 256}
QUICK_CYCLES = {"medium": 300, "held": 200}
QUICK_RUNS = [
    ("n5", "up", "medium"),
    ("n5", "up", "held"),
    ("n5", "down", "medium"),
    ("c6", "down", "medium"),
]
QUICK_WARMUP = 150


def static(config, name: str, setting: Setting, num: int, generator) -> xr.Dataset:
    """Train every (value, seed) with the parameter held; k and ‖W‖²_F along training."""
    seeds = config.train.num_instances
    grid = setting.grid(num)
    values = torch.tensor(grid).repeat_interleave(seeds).unsqueeze(-1)
    cfg = with_overrides(
        config, {"train.num_instances": len(values), "data.n_features": setting.n_features}
    )
    traj = train(
        cfg, distribution=setting.distribution(values), generator=generator, progress=False
    )
    k = geometry.represented(traj.W).sum(-1).numpy()  # (checkpoint, value·seed)
    fc = geometry.feature_count(traj.W).double().numpy()
    shape = (len(traj.steps), len(grid), seeds)
    dims = ("static_checkpoint", f"{name}_value", "seed")
    return xr.Dataset(
        {
            f"{name}_static_k": (dims, k.reshape(shape)),
            f"{name}_static_feature_count": (dims, fc.reshape(shape)),
        },
        coords={
            "static_checkpoint": traj.steps.numpy(),
            f"{name}_value": grid,
            "seed": np.arange(seeds),
        },
    )


def moving(
    config,
    setting: Setting,
    direction: str,
    speed: str,
    cycle: int,
    warmup: int,
    generator,
    *,
    with_llc: bool,
    quick: bool,
) -> xr.Dataset:
    """One run: a warm-up at one end, then the ramp; tracked observables, the parameter at each
    checkpoint, the detector's transitions, and λ̂ at every 4th checkpoint when `with_llc`."""
    start, turn = (setting.low, setting.high) if direction == "up" else (setting.high, setting.low)
    shape = "step" if speed == "held" else "cyclic"
    ramp = Ramp(setting.parameter, start, turn, begin=warmup, finish=warmup + cycle, shape=shape)
    schedule = setting.schedule(ramp)
    cfg = with_overrides(
        config,
        {
            "train.num_steps": warmup + cycle,
            "train.num_checkpoints": 30 if quick else CHECKPOINTS,
            "data.n_features": setting.n_features,
        },
    )
    traj = train(cfg, distribution=schedule, generator=generator, progress=False)
    tracked = track(traj).drop_vars(["feature_dimensionality", "regular_residual"])
    tracked.attrs = {}
    steps = traj.steps.numpy()
    tracked["schedule_value"] = ("checkpoint", [float(ramp.value_at(int(t))) for t in steps])
    tracked["k"] = (
        ("checkpoint", "instance"),
        geometry.represented(traj.W).sum(-1).numpy(),
    )
    if with_llc:
        tracked = tracked.merge(llc_along(traj, schedule, generator, quick=quick))
    tracked.attrs["schedule"] = json.dumps(schedule.to_dict())  # q_t, reloadable by from_dict
    found = detect_dynamical(tracked, schedule=schedule)
    for f in ("instance", "location", "before", "after", "driver", "confidence"):
        tracked[f"transition_{f}"] = (
            "transition",
            np.asarray(["" if getattr(t, f) is None else getattr(t, f) for t in found]),
        )
    return tracked


def llc_samples(quick: bool) -> int:
    return 1000 if quick else LLC_SAMPLES


def llc_along(traj, schedule: DistributionSchedule, generator, *, quick: bool) -> xr.Dataset:
    """λ̂ ± SE at every 4th checkpoint, at the minimum of L_n nearest the checkpoint on
    LLC_SAMPLES draws of that checkpoint's q_t (λ̂ needs w* at a local minimum of L_n: Lau
    et al. 2023), with what the refinement did: the represented count at w* (anchor_k), the
    largest change of WᵀW (anchor_gram_change) and the loss it shed, L_n(w_t) − L_n(w*).
    Where w* has another configuration than the checkpoint, the checkpoint was not near a
    minimum of its own L_n, and λ̂ describes w*, not it.

    For a sparsity schedule also the susceptibility χ = −nβ Cov(L_n, ∂_S L_n) and dλ̂/dS
    (`sampling.susceptibility`), from every KEEP_EVERY-th SGLD draw, with ∂_S L_n a central
    difference over ±SUSCEPTIBILITY_STEP on samples coupled to the checkpoint's."""
    steps = traj.steps.numpy()
    every = list(range(len(steps)))[::4]
    sub = traj.take(every)
    qs = [schedule(int(t)) for t in sub.steps]
    num = llc_samples(quick)
    with_chi = schedule.ramps[0].parameter == "sparsity"
    if with_chi:  # (checkpoint, 3, N, n): at S, S − δ and S + δ, common random numbers
        around = [_around(float(q.sparsity)) for q in qs]
        coupled = torch.stack(
            [
                coupled_sparsity_samples(schedule.n_features, num, s, generator=generator)
                for s in around
            ]
        )
        data = coupled[:, 0]
    else:
        data = torch.stack([q.sample(num, generator=generator) for q in qs])
    data = data.unsqueeze(1).expand(-1, sub.num_instances, -1, -1)  # (checkpoint, instance, N, n)
    shape = (sub.num_instances, schedule.n_features)
    importance = torch.stack([q.importance.expand(shape) for q in qs]).float()  # each q_t's own
    W, b = refine_minimum(sub.W, sub.b, data, importance=importance)
    gram = W.transpose(-1, -2) @ W - sub.W.transpose(-1, -2) @ sub.W
    llc = estimate_llc(
        (W, b),
        dataset=data,
        importance=importance,
        num_draws=60 if quick else "auto",
        num_burnin=30 if quick else "auto",
        keep_params_every=(10 if quick else KEEP_EVERY) if with_chi else None,
        generator=generator,
        progress=False,
    )
    diagnostics = llc.diagnostics.transpose("dim_0", "dim_1")
    values = {
        "llc_mean": llc.mean.numpy(),
        "llc_se": diagnostics["standard_error"].values,
        "llc_reliable": diagnostics["reliable"].values,
        "llc_reasons": diagnostics["reasons"].values.astype(str),
        "anchor_k": geometry.represented(W).sum(-1).numpy(),
        "anchor_gram_change": gram.abs().amax((-1, -2)).double().numpy(),
        "anchor_loss_drop": (_loss(sub.W, sub.b, data, importance) - _loss(W, b, data, importance))
        .double()
        .numpy(),
    }
    if with_chi:
        k = geometry.represented(sub.W).sum(-1).numpy()
        near = keeps_configuration(k, values["anchor_k"], values["anchor_gram_change"])
        values.update(_susceptibility(llc, (W, b), coupled, around, importance, near))
    out = {}
    for name, v in values.items():
        fill = {"b": False, "U": "", "i": -1}.get(v.dtype.kind, np.nan)
        column = np.full((len(steps), sub.num_instances), fill, dtype=v.dtype)
        column[every] = v
        out[name] = (("checkpoint", "instance"), column)
    return xr.Dataset(out, coords={"checkpoint": steps, "instance": np.arange(sub.num_instances)})


def _around(s: float) -> list[float]:
    """S and S ∓ δ, kept inside [0, 1]."""
    return [s, max(s - SUSCEPTIBILITY_STEP, 0.0), min(s + SUSCEPTIBILITY_STEP, 1.0)]


def _loss(W, b, x, importance, dtype=torch.float64):
    """L_n; W, b (..., m, n), (..., n) against x (..., N, n)."""
    relu = get_activation("relu")
    return reconstruction_loss(W.to(dtype), b.to(dtype), x.to(dtype), importance.to(dtype), relu)


def _susceptibility(llc, anchor, coupled, around, importance, near) -> dict[str, np.ndarray]:
    """χ and dλ̂/dS (± SE) per (checkpoint, instance) from the kept SGLD draws after burn-in,
    where `near` (the checkpoint sits near a minimum of its own L_n; NaN elsewhere: there λ̂
    and χ would describe another configuration)."""
    W_draws, b_draws = llc.param_trace  # (checkpoint, instance, chain, kept, m, n), (..., n)
    every = llc.keep_params_every
    kept = torch.arange(1, W_draws.shape[3] + 1) * every > llc.num_burnin * llc.thin
    W_draws, b_draws = W_draws[:, :, :, kept], b_draws[:, :, :, kept]
    nbeta = torch.as_tensor(llc.nbeta, dtype=torch.float64).expand(near.shape)
    out = {name: np.full(near.shape, np.nan) for name in ("chi", "chi_se", "dllc", "dllc_se")}
    for c, i in zip(*np.nonzero(near), strict=True):
        x = [coupled[c, j] for j in range(3)]  # at S, S − δ, S + δ
        width = around[c][2] - around[c][1]
        W, b, imp = anchor[0][c, i], anchor[1][c, i], importance[c, i]
        at = [_loss(W_draws[c, i], b_draws[c, i], xj, imp, torch.float32) for xj in x]
        r = posterior_response(
            at[0],
            (at[2] - at[1]) / width,
            (_loss(W, b, x[2], imp) - _loss(W, b, x[1], imp)) / width,
            nbeta[c, i],
        )
        for name in out:
            out[name][c, i] = float(getattr(r, name))
    return out


def run(out: Path, *, quick: bool = False) -> Path:
    start = time.perf_counter()
    config = experiment_config(CONFIG, out, QUICK if quick else {})
    generator = torch.Generator().manual_seed(config.seed)
    results = xr.merge(
        [
            static(config, name, s, 3 if quick else STATIC_GRID, generator)
            for name, s in SETTINGS.items()
        ]
    )
    cycles = QUICK_CYCLES if quick else CYCLES
    warmup = QUICK_WARMUP if quick else WARMUP
    attrs: dict = {"warmup": warmup, "runs": [], "cycles": [], "llc_samples": llc_samples(quick)}
    for name, setting in SETTINGS.items():
        attrs.update(
            {
                f"{name}_parameter": setting.parameter,
                f"{name}_low": setting.low,
                f"{name}_high": setting.high,
            }
        )
    for name, direction, speed in QUICK_RUNS if quick else RUNS:
        run_name = f"{name}_{direction}_{speed}"
        tracked = moving(
            config,
            SETTINGS[name],
            direction,
            speed,
            cycles[speed],
            warmup,
            generator,
            with_llc=run_name == LLC_RUN,
            quick=quick,
        )
        renamed = tracked.rename(
            {
                **{v: f"{run_name}_{v}" for v in tracked.data_vars},
                "checkpoint": f"{run_name}_checkpoint",
                "transition": f"{run_name}_transition",
                "feature": f"{name}_feature",  # n differs between the settings
            }
        )
        attrs[f"{run_name}_schedule"] = renamed.attrs.pop("schedule")
        attrs["runs"].append(run_name)
        attrs["cycles"].append(cycles[speed])
        results = xr.merge(
            [results, renamed.drop_vars(["hidden", f"{name}_feature"], errors="ignore")]
        )
    results.attrs = attrs
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
