"""How one known-λ estimate moves with nβ and γ: is its error a finite-nβ effect?

    .venv/bin/python benchmarks/llc_sensitivity.py [--case "DLN (3, 3, 3, 3, 3) r=1 σ=0.1 m=100"]
                                                   [--threads 1]

Runs `estimate_llc` on one case of tests/statistical/known_lambda.py with its defaults, then
at nβ × ¼ and × 4 (γ automatic, so it scales with nβ), at nβ × 16 and at nβ × 1 and × 16
with γ held at the default's value and at a hundredth of it (everything else automatic,
generator seed 0 throughout), and prints λ̂ ± SE and reliability per setting. A finite-nβ
bias moves with nβ at fixed γ; a localization bias moves with γ; an estimate that moves
with neither is limited by what the chains explore. Thread count stated in the output.
"""

from __future__ import annotations

import argparse

import torch
from llc_accuracy import _module  # the known-λ cases, loaded as llc_accuracy loads them


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="DLN (3, 3, 3, 3, 3) r=1 σ=0.1 m=100")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    known = _module("known_lambda")
    from tms_slt.sampling.result import default_nbeta

    case = next((c for c in known.cases() if c.name == args.case), None)
    if case is None or case.family != "dln":
        raise SystemExit(f"--case must name a DLN case of known_lambda, got {args.case!r}")
    widths, rank, sigma, batch_size = _network_args(case.name)
    model, data = known.fitted_linear_network(widths, rank, sigma)
    nbeta = default_nbeta(data[0].shape[0])

    def run(**settings):
        result = known.estimate_llc(
            model,
            known.squared_error,
            data,
            batch_size=batch_size,
            generator=torch.Generator().manual_seed(0),
            progress=False,
            **settings,
        )
        se = float(known.standard_error(result))
        return result, f"{float(result.mean):.3f} ± {se:.3f}", bool(result.diagnostics["reliable"])

    print(f"threads: {args.threads}; {case.name}, λ = {case.llc:g}, nβ = {nbeta:.1f}\n")
    print("| setting | λ̂ ± SE | reliable |\n|---|---|---|")
    default, text, ok = run()
    gamma = float(default.calibration["localization"])
    print(f"| defaults (γ = {gamma:.3g}) | {text} | {ok} |", flush=True)
    for label, settings in (
        ("nβ × ¼", {"nbeta": nbeta / 4}),
        ("nβ × 4", {"nbeta": nbeta * 4}),
        ("nβ × 16, γ fixed", {"nbeta": nbeta * 16, "localization": gamma}),
        ("γ / 100", {"localization": gamma / 100}),
        ("nβ × 16, γ / 100", {"nbeta": nbeta * 16, "localization": gamma / 100}),
    ):
        _, text, ok = run(**settings)
        print(f"| {label} | {text} | {ok} |", flush=True)


def _network_args(name: str) -> tuple[tuple[int, ...], int, float, int]:
    """(widths, rank, σ, batch size) from a case name such as "DLN (3, 3, 3) r=1 σ=0.1 m=100"."""
    shown = name[name.index("(") + 1 : name.index(")")]
    widths = tuple(int(w) for w in shown.split(","))
    rank = int(name.split("r=")[1].split()[0])
    sigma = float(name.split("σ=")[1].split()[0])
    batch_size = int(name.split("m=")[1].split()[0])
    return widths, rank, sigma, batch_size


if __name__ == "__main__":
    main()
