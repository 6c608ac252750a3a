"""A broad set of models whose learning coefficient λ is known exactly, for judging
`estimate_llc` with its defaults (the user's path: ε, γ, draws and burn-in all "auto").

Families (each anchored where a user would anchor: at a minimum of L_n, found by least
squares or L-BFGS on the training set itself):

* linear: noisy linear regression y = θᵀx + σξ, d = 50–1000, λ = d/2 (regular);
* rrr: reduced-rank regression y = BAx in all four branches of Aoyagi & Watanabe 2005
  (`theory.rrr_learning_coefficient`);
* dln: deep linear networks of depth 2–5 (Aoyagi 2024, `theory.dln_learning_coefficient`);
* tanh: a tanh MLP fitted to a teacher of its own shape; its Hessian is full rank, λ = d/2;
* tms: the regular k-gons of Chen et al. 2023 at c = 5–8 features, m = 2, refined to minima
  of L_n on one-hot data (`theory.kgon_llc`, every variant with a known λ);
* potential: a regular quadratic and normal crossings (Watanabe 2009);
* population: the c = 6 k-gons on the exact population loss at nβ = 1e3–1e5 (no data:
  the tempered posterior's own finite-nβ bias).

Batch sizes run from 10 to 1000 and the noise level from σ = 0.1 to 0.7. `cases()` lists them
all; `benchmarks/llc_accuracy.py` runs every one and prints the counts that matter: the
median |error|, how many are within 10%, and how many off by more than 15% are marked
reliable. The statistical tests run a few of them.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tms_slt.data import TMSDistribution
from tms_slt.models import get_activation, reconstruction_loss
from tms_slt.sampling.llc import LLCResult, estimate_llc
from tms_slt.theory import (
    Potential,
    dln_learning_coefficient,
    kgon_critical_point,
    kgon_llc,
    normal_crossing_potential,
    quadratic_potential,
    rrr_learning_coefficient,
    sum_of_normal_crossings_potential,
    tms_population_loss_torch,
)


@dataclass(frozen=True)
class Case:
    """One known-λ model and how to estimate its LLC with the defaults.

    `run(generator)` returns the LLCResult; for a batched case (several anchors in one call,
    as a user passes several TMS critical points at once) `index` picks this case's anchor.
    """

    name: str
    family: str
    llc: float
    run: Callable[[torch.Generator], LLCResult]
    index: tuple[int, ...] = ()
    group: str | None = None  # cases sharing a group share one run


def squared_error(f, batch) -> torch.Tensor:
    return ((f(batch[0]) - batch[1]) ** 2).sum(-1).mean()


def _lbfgs(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], iters: int = 500) -> None:
    opt = torch.optim.LBFGS(
        model.parameters(),
        max_iter=iters,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = squared_error(model, data)
        loss.backward()
        return loss

    opt.step(closure)


# -- linear regression ------------------------------------------------------------------


@functools.cache
def linear_regression(d: int, sigma: float, n: int = 10_000, seed: int = 0):
    """nn.Linear(d, 1) at the least-squares solution of n noisy samples (the minimum of L_n)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    theta = torch.randn(d, 1, generator=g, dtype=torch.float64) / math.sqrt(d)
    y = x @ theta + sigma * torch.randn(n, 1, generator=g, dtype=torch.float64)
    solution = torch.linalg.lstsq(x, y).solution
    model = nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(solution.T.float())
    return model, (x.float(), y.float())


def _linear_case(d: int, sigma: float, batch: int) -> Case:
    def run(generator):
        model, data = linear_regression(d, sigma)
        return estimate_llc(
            model, squared_error, data, batch_size=batch, generator=generator, progress=False
        )

    return Case(f"linear d={d} σ={sigma} m={batch}", "linear", d / 2, run)


# -- reduced-rank regression and deep linear networks --------------------------------------


@functools.cache
def fitted_linear_network(
    widths: tuple[int, ...], rank: int, sigma: float, n: int = 10_000, seed: int = 0
):
    """A bias-free linear network of the given widths fitted (Adam, then L-BFGS on all rows,
    float64) to a rank-r teacher with noise σ; the anchor is the minimum of L_n it reaches."""
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(widths[-1], max(rank, 1), generator=g) @ torch.randn(
        max(rank, 1), widths[0], generator=g
    )
    teacher = teacher * (rank > 0) / math.sqrt(max(rank, 1))
    x = torch.randn(n, widths[0], generator=g)
    y = x @ teacher.T + sigma * torch.randn(n, widths[-1], generator=g)
    layers = [nn.Linear(a, b, bias=False) for a, b in itertools.pairwise(widths)]
    with torch.no_grad():
        for layer in layers:
            fan_in = layer.weight.shape[1]
            layer.weight.copy_(
                0.5 * torch.randn(layer.weight.shape, generator=g) / math.sqrt(fan_in)
            )
    model = nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3000):
        idx = torch.randint(n, (256,), generator=g)
        loss = squared_error(model, (x[idx], y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model = model.double()
    _lbfgs(model, (x.double(), y.double()))
    return model.float(), (x, y)


def _network_case(
    family: str, widths: tuple[int, ...], rank: int, sigma: float, llc: float, batch: int = 100
) -> Case:
    def run(generator):
        model, data = fitted_linear_network(widths, rank, sigma)
        return estimate_llc(
            model, squared_error, data, batch_size=batch, generator=generator, progress=False
        )

    label = "RRR (M, H, N)" if family == "rrr" else "DLN"
    shown = (widths[0], widths[1], widths[2]) if family == "rrr" else widths
    return Case(f"{label} {shown} r={rank} σ={sigma} m={batch}", family, llc, run)


#: (M, H, N, r), two in the main branch of Aoyagi & Watanabe 2005 and one in each other.
RRR = [(5, 3, 4, 1), (4, 4, 4, 2), (4, 2, 4, 0), (3, 2, 6, 1), (6, 2, 3, 1), (2, 4, 2, 1)]

DLNS = [
    ((6, 2, 6), 1),
    ((4, 3, 4), 1),
    ((4, 5, 3), 2),
    ((5, 4, 3, 5), 2),
    ((3, 4, 4, 2), 1),
    ((5, 3, 5, 4), 1),
    ((4, 3, 3, 3, 4), 2),
    ((3, 3, 3, 3, 3), 1),
    ((4, 2, 3, 2, 4, 3), 1),
    ((3, 4, 2, 4, 3, 3), 2),
]


# -- a tanh MLP with a full-rank Hessian ---------------------------------------------------


@functools.cache
def fitted_tanh_mlp(inputs: int, hidden: int, sigma: float, n: int = 10_000, seed: int = 0):
    """inputs → hidden (tanh) → 1 with biases, fitted from its teacher's weights to noisy
    teacher outputs: a regular minimum (no symmetry but discrete ones), λ = d/2."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randn(n, inputs, generator=g)
    with torch.no_grad():
        y = model(x) + sigma * torch.randn(n, 1, generator=g)
    model = model.double()
    _lbfgs(model, (x.double(), y.double()), iters=2000)
    return model.float(), (x, y)


def _tanh_case(inputs: int, hidden: int, sigma: float, batch: int) -> Case:
    d = inputs * hidden + 2 * hidden + 1

    def run(generator):
        model, data = fitted_tanh_mlp(inputs, hidden, sigma)
        return estimate_llc(
            model, squared_error, data, batch_size=batch, generator=generator, progress=False
        )

    return Case(f"tanh MLP {inputs}-{hidden}-1 σ={sigma} m={batch}", "tanh", d / 2, run)


# -- TMS k-gons at c = 5..8 ----------------------------------------------------------------


def kgons_with_known_llc(c: int) -> list[tuple[int, str, float]]:
    """(k, variant, λ) of every regular k-gon at c features whose λ is known (m = 2)."""
    from tms_slt.theory import kgon_variants

    out = []
    for k in range(c, 1, -1):
        for variant in kgon_variants(k, c):
            lam = kgon_llc(k, c, variant)
            if lam is not None:
                out.append((k, variant, float(lam)))
    return out


@functools.cache
def refined_kgons(c: int, n: int, seed: int = 1):
    """(W, b) of every known-λ k-gon at c features refined to a minimum of L_n (L-BFGS,
    float64) on n samples of Chen et al.'s one-hot distribution, and that set."""
    x = TMSDistribution(c, active_features=1).sample(
        n, generator=torch.Generator().manual_seed(seed)
    )
    relu = get_activation("relu")
    Ws, bs = [], []
    for k, variant, _ in kgons_with_known_llc(c):
        W0, b0 = kgon_critical_point(k, c, variant=variant)
        W = torch.tensor(W0, requires_grad=True)
        b = torch.tensor(b0, requires_grad=True)
        opt = torch.optim.LBFGS(
            [W, b],
            max_iter=500,
            tolerance_grad=1e-12,
            tolerance_change=1e-15,
            line_search_fn="strong_wolfe",
        )

        def closure(W=W, b=b, opt=opt):
            opt.zero_grad()
            loss = reconstruction_loss(W, b, x.double(), None, relu)
            loss.backward()
            return loss

        opt.step(closure)
        Ws.append(W.detach().float())
        bs.append(b.detach().float())
    return (torch.stack(Ws), torch.stack(bs)), x


def _kgon_cases(
    c: int, family: str, group: str, label: str, estimate: Callable[[torch.Generator], LLCResult]
) -> list[Case]:
    """One Case per known-λ k-gon at c features, all anchors of one `estimate` (run once per
    seed: a user passes the critical points together, one anchor each)."""

    @functools.cache
    def run(generator_seed: int) -> LLCResult:
        return estimate(torch.Generator().manual_seed(generator_seed))

    return [
        Case(
            "TMS " + label.format(kgon=str(k) + (variant if k < c else "")),
            family,
            lam,
            lambda generator: run(generator.initial_seed()),
            index=(i,),
            group=group,
        )
        for i, (k, variant, lam) in enumerate(kgons_with_known_llc(c))
    ]


def _tms_cases(c: int, n: int) -> list[Case]:
    def estimate(generator: torch.Generator) -> LLCResult:
        params, x = refined_kgons(c, n)
        return estimate_llc(params, dataset=x, generator=generator, progress=False)

    return _kgon_cases(c, "tms", f"tms c={c} n={n}", f"c={c} {{kgon}} n={n:.0e}", estimate)


def population_kgons() -> tuple[Potential, torch.Tensor, np.ndarray]:
    """K(w) = L(w) − L(w*_j) on Chen et al.'s exact population loss (c = 6), anchored at the
    6-gon, 5+ and 5− (one leading index each), with their λ from `kgon_llc`: no data, so the
    tempered posterior's own finite-nβ bias shows alone."""
    kgons = kgons_with_known_llc(6)
    anchors, floors = [], []
    for k, variant, _ in kgons:
        W, b = kgon_critical_point(k, 6, variant=variant)
        w = torch.tensor(np.concatenate([W.ravel(), b]), dtype=torch.float32)
        anchors.append(w)
        floors.append(
            float(tms_population_loss_torch(w[:12].reshape(2, 6).double(), w[12:].double()))
        )
    floor = torch.tensor(floors)

    def fn(w: torch.Tensor) -> torch.Tensor:
        loss = tms_population_loss_torch(w[..., :12].unflatten(-1, (2, 6)), w[..., 12:])
        return loss - floor.to(w.dtype).reshape(-1, *[1] * (w.ndim - 2))

    pot = Potential(dim=18, learning_coefficient=math.nan, fn=fn, multiplicity=None, name="tms")
    return pot, torch.stack(anchors), np.array([lam for _, _, lam in kgons])


def _population_cases(nbeta: float) -> list[Case]:
    def estimate(generator: torch.Generator) -> LLCResult:
        pot, anchors, _ = population_kgons()
        return estimate_llc(
            pot, dataset=anchors, nbeta=nbeta, num_chains=8, generator=generator, progress=False
        )

    label = f"population c=6 {{kgon}} nβ={nbeta:.0e}"
    return _kgon_cases(6, "population", f"population nβ={nbeta}", label, estimate)


# -- potentials ---------------------------------------------------------------------------

POTENTIALS = {
    "quadratic d=10": lambda: quadratic_potential(10),
    "w^4": lambda: normal_crossing_potential([2]),
    "x^2+y^4": lambda: sum_of_normal_crossings_potential([[1], [2]]),
    "x^4+y^4": lambda: sum_of_normal_crossings_potential([[2], [2]]),
}


def _potential_case(name: str) -> Case:
    pot = POTENTIALS[name]()

    def run(generator):
        return estimate_llc(pot, nbeta=1000.0, num_chains=16, generator=generator, progress=False)

    return Case(f"{name}, nβ = 1000", "potential", pot.learning_coefficient, run)


def cases() -> list[Case]:
    """Every known-λ case: 76 on data or potentials, and 9 on the population loss."""
    out = [
        _linear_case(d, sigma, batch)
        for d in (50, 200, 1000)
        for sigma in (0.1, 0.7)
        for batch in (10, 100)
    ]
    out += [_linear_case(50, 0.7, batch) for batch in (30, 1000)]
    for M, H, N, r in RRR:
        for sigma in (0.1, 0.5):
            out.append(
                _network_case("rrr", (M, H, N), r, sigma, rrr_learning_coefficient(M, H, N, r))
            )
    for widths, rank in DLNS:
        out.append(_network_case("dln", widths, rank, 0.1, dln_learning_coefficient(widths, rank)))
    out += [_tanh_case(3, 4, 0.3, batch) for batch in (30, 100)]
    out += [_tanh_case(5, 3, 0.1, batch) for batch in (30, 100)]
    for c in (5, 6, 7, 8):
        for n in (10_000, 100_000):
            out += _tms_cases(c, n)
    out += [_potential_case(name) for name in POTENTIALS]
    for nbeta in (1e3, 1e4, 1e5):
        out += _population_cases(nbeta)
    return out


def standard_error(result: LLCResult) -> np.ndarray:
    """max(σ_chains/√K, MCSE) per anchor."""
    k = (~result.divergent).sum(-1).clamp(min=1).numpy()
    spread = result.std.numpy() / np.sqrt(k)
    return np.maximum(np.nan_to_num(spread, nan=np.inf), result.diagnostics["mcse"].values)
