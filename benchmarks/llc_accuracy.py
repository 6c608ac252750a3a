"""Accuracy of `estimate_llc` with its defaults on models whose λ is known exactly.

    .venv/bin/python benchmarks/llc_accuracy.py [--families linear rrr dln tanh tms potential
                                                 quickstart] [--threads 1] [--out FILE.md]

Every row calls `estimate_llc` with its defaults (ε, γ, draws and burn-in "auto") on one of
the cases of tests/statistical/known_lambda.py (76 models in six families, batch sizes
10–1000; see that module), plus the quickstart's final checkpoint (`quickstart`: the c = 6
setting trained as `tms-slt quickstart` trains it). Columns: model | λ | λ̂ ± SE (max of the
chains' spread/√K and the MCSE) | relative error | the ε chosen | the predicted minibatch-
noise bias | nβ·h_soft | the curvature ratio where the chains went | how many times their
length the chains ran (`sampling.precision`) | reliable (and the first reason where not) |
seconds. The counts at
the end are what issue #19 holds the defaults to: the median |error|, the share within 10%,
the estimates off by more than 15% that are marked reliable (must be none), and the share of
those within 10% that are marked reliable.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

_HERE = Path(__file__).resolve().parents[1] / "tests" / "statistical"
FAMILIES = ("linear", "rrr", "dln", "tanh", "tms", "potential", "quickstart", "population")


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, _HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _pick(result, index):
    """(mean, se, reliable, reasons, calibration) of one anchor of a result."""
    mean = float(result.mean[index]) if index else float(result.mean)
    k = max(int((~result.divergent[index]).sum()) if index else int((~result.divergent).sum()), 1)
    std = float(result.std[index]) if index else float(result.std)
    mcse = (
        float(result.diagnostics["mcse"].values[index])
        if index
        else float(result.diagnostics["mcse"])
    )
    se = max(std / np.sqrt(k) if np.isfinite(std) else np.inf, mcse)
    reliable = bool(np.asarray(result.diagnostics["reliable"].values)[index])
    reasons = str(np.asarray(result.diagnostics["reasons"].values)[index])
    cal = {}
    for key, value in result.calibration.items():
        if isinstance(value, torch.Tensor):
            cal[key] = float(value[index]) if value.ndim else float(value)
    nbeta = float(result.nbeta_per_index.reshape(-1)[0])
    return mean, se, reliable, reasons, cal, nbeta


def _row(name: str, lam: float, picked, seconds: float) -> tuple[str, float, bool]:
    mean, se, reliable, reasons, cal, nbeta = picked
    error = mean / lam - 1
    noise = cal.get("predicted_bias_noise", float("nan"))
    soft = nbeta * cal.get("hessian_soft", float("nan"))
    ratio = cal.get("curvature_ratio", float("nan"))
    extension = cal.get("extension", 1.0)
    why = "yes" if reliable else "no: " + reasons.split("; ")[0][:60]
    line = (
        f"| {name} | {lam:g} | {mean:.3f} ± {se:.3f} | {100 * error:+.1f}% "
        f"| {cal.get('step_size', float('nan')):.2e} | {100 * noise:+.1f}% | {soft:.3g} "
        f"| {ratio:.3f} | {extension:g} | {why} | {seconds:.1f} |"
    )
    return line, error, reliable


def _quickstart(known) -> list:
    """The quickstart's last checkpoint: one result, a row per instance with a known λ."""
    from tms_slt.config import ExperimentConfig
    from tms_slt.sampling.llc import estimate_llc
    from tms_slt.training import train
    from tms_slt.transitions import track

    start = time.perf_counter()
    config = ExperimentConfig()
    trajectory = train(config, generator=torch.Generator().manual_seed(config.seed), progress=False)
    last = trajectory.take(-1)
    result = estimate_llc(last, progress=False, generator=torch.Generator().manual_seed(1))
    truth = track(last)["llc_theory"].values
    seconds = time.perf_counter() - start
    rows = []
    for i in range(truth.shape[-1]):
        if np.isfinite(truth[0, i]):
            rows.append(
                (f"quickstart instance {i}, n = 3e4", float(truth[0, i]), result, (0, i), seconds)
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # "population" (the c = 6 k-gons without data) is opt-in: it is not one of the 76
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES[:-1]))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    known = _module("known_lambda")
    lines = [
        f"threads: {args.threads}",
        "",
        "| model | λ | λ̂ (defaults) ± SE | rel. error | ε | noise bias | nβ·h_soft "
        "| curvature ratio | chains × | reliable | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    outcomes = []
    done: dict[str, tuple] = {}
    ordered = sorted(
        (c for c in known.cases() if c.family in args.families),
        key=lambda c: args.families.index(c.family),
    )
    for case in ordered:
        key = case.group or case.name
        if key not in done:
            start = time.perf_counter()
            result = case.run(torch.Generator().manual_seed(0))
            done[key] = (result, time.perf_counter() - start)
        result, seconds = done[key]
        line, error, reliable = _row(case.name, case.llc, _pick(result, case.index), seconds)
        outcomes.append((case.family, error, reliable))
        lines.append(line)
        print(line, flush=True)
    if "quickstart" in args.families:
        for name, lam, result, index, seconds in _quickstart(known):
            line, error, reliable = _row(name, lam, _pick(result, index), seconds)
            outcomes.append(("quickstart", error, reliable))
            lines.append(line)
            print(line, flush=True)
    summary = summarize(outcomes)
    lines += ["", *summary]
    print("\n" + "\n".join(summary))
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")


def summarize(outcomes: list[tuple[str, float, bool]]) -> list[str]:
    """The counts of issue #19, over all cases and per family."""
    out = [
        "| family | cases | median abs. error | within 10% | off > 15% and reliable "
        "| reliable among those within 10% |",
        "|---|---|---|---|---|---|",
    ]
    families = sorted({f for f, _, _ in outcomes})
    for family in [*families, "all"]:
        rows = [(e, r) for f, e, r in outcomes if family in ("all", f)]
        errors = [abs(e) for e, _ in rows]
        within = [r for e, r in rows if abs(e) <= 0.10]
        wrong = sum(1 for e, r in rows if abs(e) > 0.15 and r)
        share = f"{sum(within)}/{len(within)}" + (
            f" ({100 * sum(within) / len(within):.0f}%)" if within else ""
        )
        out.append(
            f"| {family} | {len(rows)} | {100 * statistics.median(errors):.1f}% "
            f"| {len(within)} | {wrong} | {share} |"
        )
    return out


if __name__ == "__main__":
    main()
