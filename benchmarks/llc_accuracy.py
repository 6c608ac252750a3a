"""Accuracy of `estimate_llc` with its defaults on models whose λ is known exactly.

    .venv/bin/python benchmarks/llc_accuracy.py [--parts kgons dlns potentials before]
                                                [--threads 1]

Every row calls `estimate_llc` with its defaults (ε, γ, draws and burn-in "auto"), as the
tests in tests/statistical/test_llc_defaults.py do, whose model builders this script imports
(the same models, seeds and numbers). Columns: model | λ | λ̂ ± SE (max of the chains'
spread/√K and the MCSE) | relative error | the ε and γ chosen (median over anchors) |
nβ·h_soft and the curvature ratio (the two finite-nβ checks) | reliable | seconds |
calibration cost, the share of the run spent choosing the settings:
1 − t(given the chosen settings)/t(auto), measured side by side.

Parts:
* kgons: the c = 6 6-gon, 5+, 5− on the exact population loss at nβ = 1e3, 1e4, 1e5 (the
  tempered posterior's own finite-nβ bias), refined minima of L_n at n = 1e4, and the
  quickstart's final checkpoint (n = 3e4).
* dlns: seven deep linear networks of depth 2–4 fitted by Adam + L-BFGS to noisy data.
* potentials: a regular quadratic and three normal crossings at nβ = 1000, 64 chains.
* before: the refined k-gons at n = 1000 with the old quickstart settings (ε = 1e-3,
  γ = 100) beside the defaults, and the defaults at n = 3000: what issue #9 reported, and
  where the finite-nβ checks stop the defaults from being called reliable.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch

from tms_slt.sampling.llc import estimate_llc

_TEST_FILE = Path(__file__).resolve().parents[1] / "tests" / "statistical" / "test_llc_defaults.py"
_PARTS = ("kgons", "dlns", "potentials", "before")


def _tests():
    spec = importlib.util.spec_from_file_location("test_llc_defaults", _TEST_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(name: str, lam: float, result, seconds: float, share: float | None, se) -> str:
    mean = float(result.mean)
    eps = float(np.median(result.calibration["step_size"].numpy()))
    gam = float(np.median(result.calibration["localization"].numpy()))
    reliable = "yes" if bool(result.diagnostics["reliable"]) else "no"
    cost = "-" if share is None else f"{100 * share:.0f}%"
    cal = result.calibration
    soft = float(result.nbeta_per_index.reshape(-1)[0]) * float(cal["hessian_soft"])
    ratio = float(cal.get("curvature_ratio", torch.tensor(float("nan"))))
    return (
        f"| {name} | {lam:g} | {mean:.3f} ± {float(se):.3f} | {100 * (mean / lam - 1):+.1f}% "
        f"| {eps:.2e}, {gam:.3g} | {soft:.3g} | {ratio:.3f} | {reliable} | {seconds:.1f} "
        f"| {cost} |"
    )


def _timed(target, *args, **kw):
    start = time.perf_counter()
    result = estimate_llc(target, *args, progress=False, **kw)
    return result, time.perf_counter() - start


def _with_cost(target, *args, **kw):
    """(result, seconds, calibration share): the defaults, then the same settings given."""
    result, auto = _timed(target, *args, generator=torch.Generator().manual_seed(0), **kw)
    given = {
        "step_size": result.calibration["step_size"].float(),
        "localization": result.calibration["localization"].float(),
        "num_draws": result.num_draws,
        "num_burnin": result.num_burnin,
    }
    _, plain = _timed(target, *args, generator=torch.Generator().manual_seed(0), **kw, **given)
    return result, auto, max(0.0, 1 - plain / auto)


def _split(result, index: int):
    """One anchor of a batched result, for a row (diagnostics recomputed on it)."""
    from tms_slt.sampling.result import compute_llc

    return compute_llc(
        result.loss_trace[index],
        result.init_loss[index],
        result.nbeta,
        num_burnin=result.num_burnin,
        num_params=result.num_params,
        calibration={
            k: (v[index] if isinstance(v, torch.Tensor) and v.ndim else v)
            for k, v in result.calibration.items()
        },
    )


def kgons(t) -> list[str]:
    rows = []
    pot, anchors, truth = t.population_kgons()
    for nbeta in (1e3, 1e4, 1e5):
        result, seconds, share = _with_cost(pot, dataset=anchors, nbeta=nbeta, num_chains=8)
        for i, (k, v) in enumerate(t.KGONS):
            one = _split(result, i)
            name = f"{k}{v if k < 6 else ''} population, nβ = {nbeta:g}"
            rows.append(_row(name, truth[i], one, seconds, share, t.standard_error(one)))
    (W, b), x = t.refined_kgons(10_000)
    result, seconds, share = _with_cost((W, b), dataset=x)
    for i, (k, v) in enumerate(t.KGONS):
        one = _split(result, i)
        name = f"{k}{v if k < 6 else ''} minimum of L_n, n = 1e4"
        rows.append(_row(name, truth[i], one, seconds, share, t.standard_error(one)))
    start = time.perf_counter()
    result, lam = t.quickstart_final_checkpoint()
    seconds = time.perf_counter() - start
    flat = result.mean.numpy().ravel()
    for i in range(flat.size):
        one = _split(result, (0, i))
        if np.isfinite(lam.ravel()[i]):
            name = f"quickstart instance {i}, n = 3e4 (train + LLC)"
            rows.append(_row(name, lam.ravel()[i], one, seconds, None, t.standard_error(one)))
    return rows


def dlns(t) -> list[str]:
    rows = []
    for widths, rank in t.DLNS:
        model, data = t.fitted_dln(widths, rank)
        result, seconds, share = _with_cost(model, t.dln_loss, data)
        lam = t.dln_learning_coefficient(widths, rank)
        rows.append(
            _row(f"DLN {widths} r={rank}", lam, result, seconds, share, t.standard_error(result))
        )
    return rows


def potentials(t) -> list[str]:
    rows = []
    for name, make in t.POTENTIALS.items():
        pot = make()
        result, seconds, share = _with_cost(pot, nbeta=1000.0, num_chains=64)
        rows.append(
            _row(
                f"{name}, nβ = 1000",
                pot.learning_coefficient,
                result,
                seconds,
                share,
                t.standard_error(result),
            )
        )
    return rows


def before(t) -> list[str]:
    """The old fixed settings at n = 1000, and the defaults at n = 1000 and 3000 (small
    training sets, where nβ·h_soft is below the asymptotic regime)."""
    rows = []
    truth = [float(t.kgon_llc(k, 6, v)) for k, v in t.KGONS]
    old = {"step_size": 1e-3, "localization": 100.0, "num_draws": 500, "num_burnin": 100}
    runs = [(1000, "ε = 1e-3, γ = 100 (old quickstart)", old), (1000, "defaults", {})]
    for n, label, kw in [*runs, (3000, "defaults", {})]:
        (W, b), x = t.refined_kgons(n)
        result, seconds = _timed(
            (W, b), dataset=x, generator=torch.Generator().manual_seed(0), **kw
        )
        for i, (k, v) in enumerate(t.KGONS):
            one = _split(result, i)
            name = f"{k}{v if k < 6 else ''}, n = {n}, {label}"
            rows.append(_row(name, truth[i], one, seconds, None, t.standard_error(one)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=_PARTS, default=list(_PARTS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t = _tests()
    print(f"threads: {args.threads}")
    print(
        "| model | λ | λ̂ (defaults) ± SE | rel. error | ε, γ chosen | nβ·h_soft "
        "| curvature ratio | reliable | s | calibration |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for part in args.parts:
        for row in globals()[part](t):
            print(row, flush=True)


if __name__ == "__main__":
    main()
