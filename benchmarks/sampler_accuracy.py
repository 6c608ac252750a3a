"""λ̂ of the two samplers, SGLD and RMSProp-SGLD, on models whose λ is known exactly.

    .venv/bin/python benchmarks/sampler_accuracy.py [--seeds 2] [--threads 1] [--out FILE.md]

About 2.5 minutes per seed on one thread (the RRR and DLN cases run 18–20k draws);
benchmarks/results/sampler_accuracy.md is `--seeds 4 --threads 1` (10 minutes).

Each case comes from tests/statistical/known_lambda.py (its builders: the same anchors and
data as `benchmarks/llc_accuracy.py`): linear regression d = 50, σ = 0.7, m = 100; reduced-
rank regression (5, 3, 4) r = 1; a deep linear network (4, 5, 3) r = 2; the c = 6 TMS k-gons
with a known λ at n = 1e4 (one run, three anchors); the quadratic d = 10 at nβ = 1000.
Both samplers run `estimate_llc` with the defaults, `sampler="sgld"` or `"rmsprop"`, on the
same generator seeds: the same nβ (n/log n, or 1000), the same γ, number of draws and
burn-in (the automatic settings are chosen before the kernel is, from the same stream), and
for RMSProp ε = λ_rms·ε_SGLD (λ_rms = 0.1, `RMSPropSGLD.stability`) so that its largest step
ε·G_max equals SGLD's. Columns: model | λ | sampler | λ̂ ± SE (mean over seeds; SE from each
seed's max(spread/√K, MCSE)) | relative error | (λ̂ − λ)/SE | ε | draws | seconds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from llc_accuracy import _module  # the known-λ cases, loaded as llc_accuracy loads them

SAMPLERS = ("sgld", "rmsprop")


def _cases(known):
    """(name, [(label, λ, index)], run(sampler, generator) -> LLCResult) per case."""
    from tms_slt.sampling.llc import estimate_llc
    from tms_slt.theory import (
        dln_learning_coefficient,
        quadratic_potential,
        rrr_learning_coefficient,
    )

    def module_run(build):
        def run(sampler, generator):
            model, data = build()
            return estimate_llc(
                model,
                known.squared_error,
                data,
                batch_size=100,
                sampler=sampler,
                generator=generator,
                progress=False,
            )

        return run

    def tms_run(sampler, generator):
        params, x = known.refined_kgons(6, 10_000)
        return estimate_llc(params, dataset=x, sampler=sampler, generator=generator, progress=False)

    def quadratic_run(sampler, generator):
        return estimate_llc(
            quadratic_potential(10),
            nbeta=1000.0,
            num_chains=16,
            sampler=sampler,
            generator=generator,
            progress=False,
        )

    kgons = [
        (f"TMS c=6 {k}{variant if k < 6 else ''} n=1e4", lam, (i,))
        for i, (k, variant, lam) in enumerate(known.kgons_with_known_llc(6))
    ]
    return [
        (
            "linear",
            [("linear d=50 σ=0.7 m=100", 25.0, ())],
            module_run(lambda: known.linear_regression(50, 0.7)),
        ),
        (
            "rrr",
            [("RRR (5, 3, 4) r=1 σ=0.1 m=100", rrr_learning_coefficient(5, 3, 4, 1), ())],
            module_run(lambda: known.fitted_linear_network((5, 3, 4), 1, 0.1)),
        ),
        (
            "dln",
            [("DLN (4, 5, 3) r=2 σ=0.1 m=100", dln_learning_coefficient((4, 5, 3), 2), ())],
            module_run(lambda: known.fitted_linear_network((4, 5, 3), 2, 0.1)),
        ),
        ("tms", kgons, tms_run),
        ("quadratic", [("quadratic d=10, nβ = 1000", 5.0, ())], quadratic_run),
    ]


def _estimate(result, index):
    """(λ̂, SE) of one anchor: SE = max(σ_chains/√K, MCSE), as llc_accuracy.py."""
    mean = float(result.mean[index]) if index else float(result.mean)
    k = max(int((~result.divergent[index]).sum()) if index else int((~result.divergent).sum()), 1)
    std = float(result.std[index]) if index else float(result.std)
    mcse = result.diagnostics["mcse"].values
    mcse = float(mcse[index]) if index else float(mcse)
    return mean, max(std / np.sqrt(k) if np.isfinite(std) else np.inf, mcse)


def _step(result, index, sampler):
    key = "rmsprop_step_size" if sampler == "rmsprop" else "step_size"
    value = result.calibration[key]
    return float(value[index]) if value.ndim else float(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    known = _module("known_lambda")
    lines = [
        f"threads: {args.threads}; seeds: {args.seeds} (generator seeds 0..{args.seeds - 1})",
        "",
        "| model | λ | sampler | λ̂ ± SE | rel. error | (λ̂−λ)/SE | ε | draws | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    summary = {s: [] for s in SAMPLERS}
    for _, anchors, run in _cases(known):
        for sampler in SAMPLERS:
            start = time.perf_counter()
            results = [
                run(sampler, torch.Generator().manual_seed(seed)) for seed in range(args.seeds)
            ]
            seconds = (time.perf_counter() - start) / args.seeds
            for label, lam, index in anchors:
                picked = np.array([_estimate(r, index) for r in results])
                mean = picked[:, 0].mean()
                se = np.sqrt((picked[:, 1] ** 2).sum()) / len(results)
                error = mean / lam - 1
                summary[sampler].append(abs(error))
                eps = np.mean([_step(r, index, sampler) for r in results])
                line = (
                    f"| {label} | {lam:g} | {sampler} | {mean:.3f} ± {se:.3f} "
                    f"| {100 * error:+.1f}% | {(mean - lam) / se:+.1f} | {eps:.2e} "
                    f"| {results[0].num_draws} | {seconds:.1f} |"
                )
                lines.append(line)
                print(line, flush=True)
    lines.append("")
    for sampler in SAMPLERS:
        errors = np.array(summary[sampler])
        line = (
            f"{sampler}: median |rel. error| {100 * np.median(errors):.1f}%, "
            f"mean {100 * errors.mean():.1f}%, within 5%: {(errors < 0.05).sum()}/{len(errors)}"
        )
        lines.append(line)
        print(line)
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
