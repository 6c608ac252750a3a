"""checks.null_confinement on the known-λ cases of the module families (branch null-confinement).

    python benchmarks/null_confinement.py [--families rrr dln] [--threads 1]

Prints per case λ, λ̂, its error, ½·(curved Hessian directions) and the null confinement:
min over the Hessian's null eigenvectors of nβ·ΔL at the chains' free-diffusion reach.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

_HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["rrr", "dln"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = importlib.util.spec_from_file_location(
        "known_lambda", _HERE.parent / "tests" / "statistical" / "known_lambda.py"
    )
    known = importlib.util.module_from_spec(spec)
    sys.modules["known_lambda"] = known
    spec.loader.exec_module(known)
    print(f"threads: {args.threads}\n")
    print("| model | λ | λ̂ | error | ½·curved | null confinement |\n|---|---|---|---|---|---|")
    for case in known.cases():
        if case.family not in args.families:
            continue
        result = case.run(torch.Generator().manual_seed(0))
        cal = result.calibration
        mean = float(result.mean[case.index] if case.index else result.mean)
        curved = 0.5 * float(cal["num_curved"][case.index] if case.index else cal["num_curved"])
        held = cal["null_confinement"]
        held = float(held[case.index] if case.index else held)
        print(
            f"| {case.name} | {case.llc:g} | {mean:.3f} | {mean / case.llc - 1:+.1%} "
            f"| {curved:g} | {held:.3g} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
