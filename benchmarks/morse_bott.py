"""Is the fitted minimum Morse–Bott? A probe of λ = ½·(curved directions) without chains.

    .venv/bin/python benchmarks/morse_bott.py [--threads 1] [--directions 8] [--out FILE.md]

At a Morse–Bott minimum the set of minima is, near w*, a manifold whose tangent space is the
Hessian's null space, and λ = ½ × the number of curved directions. Then a step t·v along a
null direction v can be undone by moving in the curved directions alone: the loss after
that relaxation is 0 to rounding. Where λ exceeds ½·curved the minimum is not Morse–Bott,
and the relaxed loss stays positive.

For each fitted reduced-rank regression and deep linear network of
tests/statistical/known_lambda.py (the same fits `benchmarks/llc_accuracy.py` estimates),
this prints λ, ½·curved, and the median over random unit null directions v of nβ·ΔL at
w* + t·v before and after relaxing (Newton in w*'s curved subspace, full data, float64), for
t = 0.3 (about the null-space spread the chains reach, `checks.curvature_ratio_at_ends`'s
positions) and t = 1. nβ = n / log n, the default. No chain is run: these are properties of
the loss, the ground a flag for "λ above ½·curved" would have to stand on.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import sys
from pathlib import Path

import torch
from torch.func import functional_call

_HERE = Path(__file__).resolve().parents[1] / "tests" / "statistical"
SCALES = (0.3, 1.0)
NEWTON_STEPS = 15


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, _HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _flat_loss(model, x, y):
    """L_n as a function of the flat parameter vector, and w*."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    anchor = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(w):
        params, start = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            size = math.prod(shape)
            params[name] = w[start : start + size].reshape(shape)
            start += size
        return ((functional_call(model, params, (x,)) - y) ** 2).sum(-1).mean()

    return loss, anchor


def _relaxed(loss, w, C):
    """min over a of L(w + C a), by Newton steps in the span of C's columns."""
    a = torch.zeros(C.shape[1], dtype=torch.float64)
    for _ in range(NEWTON_STEPS):

        def along(a):
            return loss(w + C @ a)

        g = torch.autograd.functional.jacobian(along, a)
        H = torch.autograd.functional.hessian(along, a)
        a = a - torch.linalg.lstsq(H, g).solution
    return loss(w + C @ a).item()


def probe(known, widths, rank, sigma, directions, generator):
    """(½·curved, {t: (median nβΔL straight, median nβΔL relaxed)})."""
    model, (x, y) = known.fitted_linear_network(widths, rank, sigma)
    model, x, y = model.double(), x.double(), y.double()
    loss, anchor = _flat_loss(model, x, y)
    nbeta = len(x) / math.log(len(x))
    h, V = torch.linalg.eigh(torch.autograd.functional.hessian(loss, anchor))
    null = h < 1e-3 * h[-1]  # curvature.NULL_FRACTION
    N, C = V[:, null], V[:, ~null]
    at_anchor = loss(anchor).item()
    out = {}
    for t in SCALES:
        straight, relaxed = [], []
        for _ in range(directions):
            v = N @ torch.randn(N.shape[1], generator=generator, dtype=torch.float64)
            w = anchor + t * v / v.norm()
            straight.append(nbeta * (loss(w).item() - at_anchor))
            relaxed.append(nbeta * (_relaxed(loss, w, C) - at_anchor))
        out[t] = (statistics.median(straight), statistics.median(relaxed))
    return 0.5 * int((~null).sum()), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--directions", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    known = _module("known_lambda")
    header = " | ".join(f"t = {t:g}: straight → relaxed" for t in SCALES)
    lines = [
        f"threads: {args.threads}, {args.directions} random null directions per model",
        "",
        f"| model | λ | ½·curved | {header} |",
        "|---|---|---|" + "---|" * len(SCALES),
    ]
    print("\n".join(lines), flush=True)
    generator = torch.Generator().manual_seed(0)
    fits = [("rrr", (m, h, n), r) for m, h, n, r in known.RRR] + [
        ("dln", w, r) for w, r in known.DLNS
    ]
    for family, widths, rank in fits:
        if family == "rrr":
            lam = known.rrr_learning_coefficient(*widths, rank)
        else:
            lam = known.dln_learning_coefficient(widths, rank)
        half, probed = probe(known, widths, rank, 0.1, args.directions, generator)
        cells = " | ".join(f"{s:.3g} → {r:.2g}" for s, r in probed.values())
        label = "RRR (M, H, N)" if family == "rrr" else "DLN"
        lines.append(f"| {label} {widths} r={rank} σ=0.1 | {lam:g} | {half:g} | {cells} |")
        print(lines[-1], flush=True)
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
