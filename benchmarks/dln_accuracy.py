"""Accuracy of the LLC estimator on deep linear networks (DLNs) against Aoyagi's λ.

    .venv/bin/python benchmarks/dln_accuracy.py [--parts module potential halved reference
                                                 module-deep] [--seeds N]

λ is Aoyagi 2024, Theorem 1 (`tms_slt.theory.dln_learning_coefficient`); Lau et al. 2023
(arXiv 2308.12108) used DLNs as LLC ground truth. The SGLD rows run the settings and seeds
of tests/statistical/test_llc_known.py, imported from that file, so they are the tests'
numbers; they also record the MALA acceptance, which leaves the chains unchanged. Parts:

* module: the data-path cases (`_dln_llc`: nn.Module, 5000 samples, nβ = 1e4, γ = 30,
  ε = 1e-5, 16 chains × 4000 draws, batch 100).
* potential: the deep cases on `dln_potential` (`_dln_potential_llc`: nβ = 300, γ = 3,
  ε = 0.05/(M·nβ), burn-in ε-time 0.8, draws ε-time 0.4, 16 chains).
* halved: the same with ε/2 and twice the draws (same ε-time): the discretization check.
* reference: the exact tempered posterior ∝ exp(−nβK − γ‖w‖²/2) of the same potentials,
  sampled by Metropolis-corrected HMC (no discretization bias), at the test's (nβ, γ) and a
  few others: what λ̂ = nβE[K] is at finite nβ, whatever the sampler.
* module-deep: the deep cases on the data path (the former xfails; not in the tests).

Every row: λ, λ̂ ± SE (max of the chains' spread/√K and the MCSE, as the tests use; the
standard error over chains for HMC), the relative error λ̂/λ − 1, the mean MALA (or HMC)
acceptance and the wall-clock seconds. One thread, as in CI.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import time
from pathlib import Path

import torch

from tms_slt.theory import Potential, dln_learning_coefficient, dln_potential

_TEST_FILE = Path(__file__).resolve().parents[1] / "tests" / "statistical" / "test_llc_known.py"
_PARTS = ("module", "potential", "halved", "reference", "module-deep")
_MODULE_DEEP = [([5, 3, 5, 4], 1), ([3, 4, 4, 2], 1), ([3, 3, 3, 3, 3], 1)]
# (nβ, γ) of the HMC reference besides the test's: larger nβ, and γ = 1 and 30 around γ = 3.
_REFERENCE_EXTRA = [(1e4, 3.0), (300.0, 1.0), (1e4, 30.0)]


def _load_tests():
    spec = importlib.util.spec_from_file_location("test_llc_known", _TEST_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(path: str, widths, rank, setting: str, lam, mean, se, accept, seconds) -> None:
    acc = "  —  " if accept is None else f"{accept:5.3f}"
    print(
        f"| {path:9} | {widths!s:16} | {rank} | {setting:34} | {lam:5.2f} | "
        f"{mean:6.3f} ± {se:5.3f} | {mean / lam - 1:+6.1%} | {acc} | {seconds:5.1f} |",
        flush=True,
    )


def _sgld_row(tests, path: str, widths, rank, setting: str, run) -> tuple[float, float]:
    """Run, print one row, return (λ̂, seconds)."""
    lam = dln_learning_coefficient(widths, rank)
    start = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - start
    accept = None if result.mala_accept is None else float(result.mala_accept.mean())
    divergent = int(result.num_divergent)
    setting = setting if not divergent else f"{setting} ({divergent} divergent)"
    mean = float(result.mean)
    _row(path, widths, rank, setting, lam, mean, tests._standard_error(result), accept, seconds)
    return mean, seconds


def hmc_reference(
    pot: Potential,
    nbeta: float,
    gamma: float,
    *,
    num_layers: int,
    chains: int = 64,
    iterations: int = 400,
    seed: int = 0,
) -> tuple[float, float, float]:
    """nβE[K] under ∝ exp(−nβK(w) − γ‖w‖²/2) by HMC with a Metropolis correction (Neal
    2011, "MCMC using Hamiltonian dynamics"), in float64, chains started at w = 0.

    Leapfrog step 0.3/√(2M·nβ) (2M·nβ is the largest Hessian eigenvalue at 0), a random
    path length up to ≈ 0.5/√γ (half the localization width), the second half of the
    iterations kept. Returns (mean, standard error over chains, mean acceptance).
    """
    g = torch.Generator().manual_seed(seed)
    leap = 0.3 / math.sqrt(2 * num_layers * nbeta)
    max_steps = max(10, math.ceil(0.5 / (math.sqrt(gamma) * leap)))

    def energy_and_grad(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w = w.detach().requires_grad_(True)
        with torch.enable_grad():
            k = pot(w)
            u = nbeta * k + 0.5 * gamma * (w * w).sum(-1)
            (grad,) = torch.autograd.grad(u.sum(), w)
        return u.detach(), grad, k.detach()

    w = torch.zeros(chains, pot.dim, dtype=torch.float64)
    u, grad, k = energy_and_grad(w)
    kept, accepts = [], []
    for it in range(iterations):
        p = torch.randn(chains, pot.dim, generator=g, dtype=torch.float64)
        h0 = u + 0.5 * (p * p).sum(-1)
        steps = int(torch.randint(max_steps // 2, max_steps + 1, (1,), generator=g))
        w1, p1 = w, p - 0.5 * leap * grad
        for i in range(steps):
            w1 = w1 + leap * p1
            u1, grad1, k1 = energy_and_grad(w1)
            p1 = p1 - (leap if i < steps - 1 else 0.5 * leap) * grad1
        h1 = u1 + 0.5 * (p1 * p1).sum(-1)
        alpha = torch.exp((h0 - h1).clamp(max=0.0)).nan_to_num(0.0)
        take = torch.rand(chains, generator=g, dtype=torch.float64) < alpha
        w = torch.where(take[:, None], w1, w)
        grad = torch.where(take[:, None], grad1, grad)
        u, k = torch.where(take, u1, u), torch.where(take, k1, k)
        accepts.append(float(alpha.mean()))
        if it >= iterations // 2:
            kept.append(nbeta * k)
    per_chain = torch.stack(kept, dim=-1).mean(-1)
    se = float(per_chain.std()) / math.sqrt(chains)
    return float(per_chain.mean()), se, sum(accepts) / len(accepts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=_PARTS, default=list(_PARTS[:4]))
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="potential/halved: seeds 0..N-1 (seed 0 is the test's), then their mean ± "
        "std/√N: the run-to-run spread, to set against the per-run SE",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    tests = _load_tests()
    deep = [(p.values if hasattr(p, "values") else p) for p in tests.DEEP_DLNS]
    print(
        f"| path      | widths           | r | {'setting':34} |     λ | "
        "λ̂ ± SE         |  rel.  |  acc. |     s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    module_cases = [
        *(tests.DLNS if "module" in args.parts else []),
        *(_MODULE_DEEP if "module-deep" in args.parts else []),
    ]
    for widths, rank in module_cases:
        _sgld_row(
            tests,
            "module",
            widths,
            rank,
            "nβ=1e4 γ=30 ε=1e-5",
            lambda w=widths, r=rank: tests._dln_llc(w, r, mala=True),
        )
    for factor, part in ((1.0, "potential"), (0.5, "halved")):
        if part not in args.parts:
            continue
        for widths, rank in deep:
            eps = factor * tests._DEEP_H / ((len(widths) - 1) * tests._DEEP_NBETA)
            setting = f"nβ={tests._DEEP_NBETA:g} γ={tests._DEEP_GAMMA:g} ε={eps:.2e}"
            runs = [
                _sgld_row(
                    tests,
                    "potential",
                    widths,
                    rank,
                    f"{setting} seed {seed}",
                    # MALA (a second gradient per step) only for the first seed, the tests' own.
                    lambda w=widths, r=rank, f=factor, s=seed: tests._dln_potential_llc(
                        w, r, seed=s, step_factor=f, mala=s == 0
                    ),
                )
                for seed in range(args.seeds)
            ]
            if len(runs) > 1:
                means = torch.tensor([m for m, _ in runs], dtype=torch.float64)
                _row(
                    "potential",
                    widths,
                    rank,
                    f"{setting} {len(runs)} seeds",
                    dln_learning_coefficient(widths, rank),
                    float(means.mean()),
                    float(means.std()) / math.sqrt(len(runs)),
                    None,
                    sum(t for _, t in runs),
                )
    if "reference" in args.parts:
        settings = [(tests._DEEP_NBETA, tests._DEEP_GAMMA), *_REFERENCE_EXTRA]
        for widths, rank in deep:
            pot = dln_potential(widths, rank)
            for nbeta, gamma in settings:
                start = time.perf_counter()
                mean, se, accept = hmc_reference(pot, nbeta, gamma, num_layers=len(widths) - 1)
                _row(
                    "exact HMC",
                    widths,
                    rank,
                    f"nβ={nbeta:g} γ={gamma:g}",
                    pot.learning_coefficient,
                    mean,
                    se,
                    accept,
                    time.perf_counter() - start,
                )


if __name__ == "__main__":
    main()
