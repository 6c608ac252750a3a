"""Chen et al. 2023, Bayesian phase transitions in n: predicted from F_n, observed by sampling.

    .venv/bin/python experiments/chen2023/bayesian_transitions.py [--quick] [--out DIR]

Predicted: the crossings n_c between the c = 6 local minima with known λ (6-gon, 5+, 5−) of
F_n = n L_k + λ_k log n + ½‖w_k‖² (the last term: Chen et al.'s standard normal prior), from
`theory.kgon_llc`, and again with λ̂ ± 2 SE (estimate_llc's defaults at the minima refined on
the training set) for an interval. (The crossings with every O(1) term are closed forms,
`theory.kgon_free_energy`, computed by `tms-slt figures chen2023`; the non-asymptotic ones
come from `free_energy_ti.py`.) Observed: the tempered posterior exp(−n L_N(w)) φ(w) on one
training set of N samples, at a log ladder of n, sampled by replica exchange
(`sampling.tempering.parallel_tempering`, R walkers per rung from Xavier-normal starts), every
draw of the second half labelled by its k-gon. Saves results.nc + meta.json into --out
(default paper/data/chen2023/bayesian_transitions).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from tms_slt.data import TMSDistribution
from tms_slt.geometry import kgon_labels
from tms_slt.io import save_run
from tms_slt.models import init_params
from tms_slt.paper import experiment_config, experiment_main
from tms_slt.sampling.llc import estimate_llc
from tms_slt.sampling.tempering import log_ladder, parallel_tempering
from tms_slt.theory import kgon_critical_point, kgon_llc, kgon_llc_report, kgon_loss
from tms_slt.training import refine_minimum
from tms_slt.transitions import bayesian_crossings

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "bayesian_transitions.toml"
DEFAULT_OUT = HERE.parents[1] / "paper" / "data" / "chen2023" / "bayesian_transitions"
#: The c = 6 local minima with a known λ, as (k, variant, label).
MINIMA = ((6, "-", "6"), (5, "+", "5+"), (5, "-", "5-"))
#: (n_min, n_max, rungs, walkers per rung, rounds, SGLD steps per round)
LADDER = (20.0, 5000.0, 20, 16, 300, 500)
QUICK_LADDER = (50.0, 2000.0, 8, 2, 12, 100)
QUICK = {"data.n_train": 2000, "llc.num_draws": 300, "llc.num_burnin": 100}
#: Draws kept per walker per round.
KEEP_PER_ROUND = 5


def predicted(config, x: torch.Tensor, generator: torch.Generator) -> xr.Dataset:
    """L, λ, ½‖w*‖², λ̂ ± SE per minimum; the crossings of F_n with λ (with and without the
    prior term), with λ̂, and with λ̂'s difference moved by ±2 SE."""
    labels = [label for _, _, label in MINIMA]
    points = [kgon_critical_point(k, 6, variant=v) for k, v, _ in MINIMA]
    # λ̂ deep inside each "−" flat family (see kgon_table.DEAD_BIAS); the prior term at the
    # default point, as Chen et al. compute it.
    anchors = [kgon_critical_point(k, 6, variant=v, dead_bias=-1.0) for k, v, _ in MINIMA]
    W0 = torch.tensor(np.stack([W for W, _ in anchors]), dtype=torch.float32)
    b0 = torch.tensor(np.stack([b for _, b in anchors]), dtype=torch.float32)
    W, b = refine_minimum(W0, b0, x)
    result = estimate_llc(
        (W, b), dataset=x, **dataclasses.asdict(config.llc), generator=generator, progress=False
    )
    loss = {lab: kgon_loss(k, 6, variant=v) for k, v, lab in MINIMA}
    llc = {lab: float(kgon_llc(k, 6, v)) for k, v, lab in MINIMA}
    prior = {
        lab: 0.5 * float((W**2).sum() + (b**2).sum())
        for (W, b), lab in zip(points, labels, strict=True)
    }
    # The softest curved direction of the exact loss (eigenvalues below 1e-6 of the largest
    # are the flat family's): where n·h ≲ 1 the leading-order F_n does not hold yet.
    soft = {}
    for k, v, lab in MINIMA:
        eig = np.asarray(kgon_llc_report(k, 6, v).eigenvalues)
        soft[lab] = float(eig[eig > 1e-6 * eig.max()].min())
    hat = dict(zip(labels, result.mean.numpy().tolist(), strict=True))
    se = dict(zip(labels, result.diagnostics["standard_error"].values.tolist(), strict=True))
    rows = [
        (name, t.before, t.after, t.location)
        for name, lam, const in (
            ("theory", llc, prior),
            ("theory, no prior term", llc, None),
            ("estimate", hat, prior),
        )
        for t in bayesian_crossings(loss, lam, constants=const, n_min=2, n_max=1e7)
    ]
    # The interval: each crossing a → b of the estimate again with λ̂_b − λ̂_a moved by
    # ±2 SE of the difference (the two estimates are independent chains).
    for _, a, b, _ in [r for r in rows if r[0] == "estimate"]:
        spread = 2 * float(np.hypot(se[a], se[b]))
        for side, shift in (("lower", -spread), ("upper", spread)):
            pair = {a: hat[a], b: hat[b] + shift}
            found = bayesian_crossings(
                {a: loss[a], b: loss[b]},
                pair,
                constants={a: prior[a], b: prior[b]},
                n_min=2,
                n_max=1e7,
            )
            rows += [(f"estimate, Δλ {side}", t.before, t.after, t.location) for t in found]
    return xr.Dataset(
        {
            "minimum_loss": ("minimum", [loss[k] for k in labels]),
            "minimum_llc": ("minimum", [llc[k] for k in labels]),
            "minimum_prior_term": ("minimum", [prior[k] for k in labels]),
            "minimum_llc_hat": ("minimum", [hat[k] for k in labels]),
            "minimum_softest_curvature": ("minimum", [soft[k] for k in labels]),
            "minimum_llc_se": ("minimum", [se[k] for k in labels]),
            "crossing_source": ("crossing", [r[0] for r in rows]),
            "crossing_before": ("crossing", [r[1] for r in rows]),
            "crossing_after": ("crossing", [r[2] for r in rows]),
            "crossing_n": ("crossing", [r[3] for r in rows]),
        },
        coords={"minimum": labels},
    )


def observed(x: torch.Tensor, ladder: tuple, generator: torch.Generator) -> xr.Dataset:
    """Replica exchange on the ladder; label counts per rung (second half) and mixing."""
    n_min, n_max, rungs, walkers, rounds, steps = ladder
    nbeta = log_ladder(n_min, n_max, rungs).float()
    W0, b0 = init_params((rungs, walkers), 2, 6, generator=generator)
    s = parallel_tempering(
        W0,
        b0,
        x,
        nbeta,
        num_rounds=rounds,
        steps_per_round=steps,
        keep_every=steps // KEEP_PER_ROUND,
        generator=generator,
    )
    labels = kgon_labels(s.W, s.b).astype(str)  # (rung, walker, kept)
    half = labels.shape[-1] // 2
    second = labels[..., half:].reshape(rungs, -1)
    classes = sorted(set(second.ravel().tolist()), key=lambda c: (-int(c[0]), c))
    counts = np.stack([(second == c).sum(-1) for c in classes], axis=-1)
    # The first and second quarter of the kept half: their difference is the Monte Carlo
    # check that the rungs have settled.
    quarter = labels[..., half:].shape[-1] // 2
    q1, q2 = labels[..., half : half + quarter], labels[..., half + quarter :]
    return xr.Dataset(
        {
            "count": (("n", "configuration"), counts),
            "fraction_6gon_first": ("n", (q1 == "6").mean((-1, -2))),
            "fraction_6gon_second": ("n", (q2 == "6").mean((-1, -2))),
            "mean_loss": (
                "n",
                s.loss[..., s.loss.shape[-1] // 2 :].double().mean((-1, -2)).numpy(),
            ),
            "swap_rate": ("rung_pair", s.swap_rate.numpy()),
            "round_trips": ("walker", s.round_trips()),
        },
        coords={"n": nbeta.double().numpy(), "configuration": classes},
        attrs={"walkers_per_rung": walkers, "rounds": rounds, "steps_per_round": steps},
    )


def run(out: Path, *, quick: bool = False) -> Path:
    start = time.perf_counter()
    config = experiment_config(CONFIG, out, QUICK if quick else {})
    generator = torch.Generator().manual_seed(config.seed)
    x = TMSDistribution(6, active_features=1).sample(config.data.n_train, generator=generator)
    results = xr.merge(
        [
            predicted(config, x, generator),
            observed(x, QUICK_LADDER if quick else LADDER, generator),
        ],
        combine_attrs="no_conflicts",
    )
    return save_run(
        out,
        results,
        config,
        command="chen2023/bayesian_transitions",
        quick=quick,
        wall_time_s=round(time.perf_counter() - start, 1),
    )


def main(argv: list[str] | None = None) -> int:
    return experiment_main(run, DEFAULT_OUT, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
