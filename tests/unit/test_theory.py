"""Unit tests for tms_slt.theory: closed-form learning coefficients and the exact TMS loss."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.integrate
import torch

from tms_slt import theory
from tms_slt.theory import (
    dln_anchor,
    dln_learning_coefficient,
    dln_potential,
    kgon_critical_point,
    kgon_loss,
    kgon_solution,
    normal_crossing_learning_coefficient,
    normal_crossing_potential,
    quadratic_potential,
    regular_learning_coefficient,
    rrr_learning_coefficient,
    sum_of_normal_crossings_learning_coefficient,
    sum_of_normal_crossings_potential,
    tms_population_loss,
    tms_population_loss_torch,
)

# ---------------------------------------------------------------------------------------
# Regular, reduced-rank regression, deep linear networks
# ---------------------------------------------------------------------------------------


def test_regular_learning_coefficient() -> None:
    assert regular_learning_coefficient(1) == 0.5
    assert regular_learning_coefficient(7) == 3.5
    for bad in (0, -3):
        with pytest.raises(ValueError, match="d must be"):
            regular_learning_coefficient(bad)
    for bad in (2.0, True):
        with pytest.raises(TypeError):
            regular_learning_coefficient(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("M", "H", "N", "r", "expected", "why"),
    [
        # K = (ab − a*b*)², a*b* ≠ 0: smooth hypersurface in R², regular in 1 direction.
        (1, 1, 1, 1, 1 / 2, "scalar product, true rank 1"),
        # K = (ab)²: normal crossing a²b², λ = 1/2. Without the +1/8 parity term: 3/8.
        (1, 1, 1, 0, 1 / 2, "parity term: M+H+N+r = 3 is odd"),
        # K = ‖b‖²‖a‖² with a, b ∈ R²: blow-up gives λ = min(M, N)/2 = 1.
        (2, 1, 2, 0, 1.0, "rank-0 with M = N = 2, H = 1"),
        # Rank-1 2x2 matrices form a 3-dimensional manifold: regular, λ = 3/2.
        (2, 1, 2, 1, 3 / 2, "rank-1 manifold of dimension 3"),
        # Branch M + H < N + r: x ↦ b a x with b ∈ R³, a scalar, true map ≠ 0: λ = 3/2.
        (1, 1, 3, 1, 3 / 2, "branch M+H < N+r"),
        (3, 1, 1, 1, 3 / 2, "branch N+H < M+r"),
        # Branch M + N < H + r: scalar map Σ_h b_h a_h = c ≠ 0, a smooth hypersurface.
        (1, 3, 1, 1, 1 / 2, "branch M+N < H+r"),
        # Main branch, even parity: [2·3·4 − 0 − 9]/8 + 1/8 (7 is odd) = 2.
        (2, 2, 2, 1, 2.0, "main branch with parity"),
        (2, 2, 2, 0, 3 / 2, "main branch, even parity: [2·2·4 − 0 − 4]/8"),
    ],
)
def test_rrr_hand_values(M: int, H: int, N: int, r: int, expected: float, why: str) -> None:
    assert rrr_learning_coefficient(M, H, N, r) == pytest.approx(expected, abs=0), why


def test_rrr_bad_input() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        rrr_learning_coefficient(2, 1, 3, 2)
    with pytest.raises(ValueError):
        rrr_learning_coefficient(0, 1, 1, 0)
    with pytest.raises(ValueError):
        rrr_learning_coefficient(2, 2, 2, -1)


@pytest.mark.parametrize("H1", range(1, 7))
@pytest.mark.parametrize("H2", range(1, 7))
def test_dln_single_layer_is_regular(H1: int, H2: int) -> None:
    for r in range(min(H1, H2) + 1):
        assert dln_learning_coefficient([H1, H2], r) == H1 * H2 / 2


def test_dln_three_widths_agree_with_rrr_exhaustively() -> None:
    count = 0
    for M, H, N in itertools.product(range(1, 7), repeat=3):
        for r in range(min(M, H, N) + 1):
            got = dln_learning_coefficient([M, H, N], r)
            assert got == rrr_learning_coefficient(M, H, N, r), (M, H, N, r)
            count += 1
    assert count == 657  # all (M, H, N) in 1..6 with 0 <= r <= min


def _brute_force_dln(widths: tuple[int, ...], r: int) -> list[float]:
    """λ of Aoyagi 2024, Thm 1, for every subset Σ (|Σ| ≥ 2) meeting the three conditions.

    Written independently of the module, straight from REFERENCES.md.
    """
    deltas = [h - r for h in widths]
    values = []
    for size in range(2, len(widths) + 1):
        for sigma in itertools.combinations(range(len(widths)), size):
            inside = [deltas[j] for j in sigma]
            outside = [deltas[j] for j in range(len(widths)) if j not in sigma]
            ell, S = size - 1, sum(inside)
            if outside and not max(inside) < min(outside):
                continue
            if not S >= ell * max(inside):
                continue
            if outside and not S < ell * min(outside):
                continue
            a = S - ell * (math.ceil(S / ell) - 1)
            lam = (
                (-(r**2) + r * (widths[0] + widths[-1])) / 2
                + a * (ell - a) / (4 * ell)
                - ell * (ell - 1) / 4 * (S / ell) ** 2
                + sum(x * y for x, y in itertools.combinations(inside, 2)) / 2
            )
            values.append(lam)
    return values


def test_dln_brute_force_over_subsets() -> None:
    """Every subset of size ≥ 2 is tried: exactly one is valid, and its λ is returned."""
    for depth in range(2, 6):
        for widths in itertools.product(range(1, 4), repeat=depth):
            for r in range(min(widths) + 1):
                values = _brute_force_dln(widths, r)
                assert len(values) == 1, (widths, r, values)
                assert dln_learning_coefficient(widths, r) == pytest.approx(values[0], abs=1e-12)


def test_dln_hand_values() -> None:
    # Three scalar layers, true product ≠ 0: smooth hypersurface abc = const, λ = 1/2.
    assert dln_learning_coefficient([1, 1, 1, 1], 1) == 0.5
    # True product 0: K = (abc)², normal crossing with λ = 1/2 (multiplicity 3).
    assert dln_learning_coefficient([1, 1, 1, 1], 0) == 0.5
    # A singleton Σ is never valid: the scan starts at |Σ| = 2.
    with pytest.raises(RuntimeError, match="no index set"):
        theory.coefficients._aoyagi_sigma([-5, 3])


def test_dln_bad_input() -> None:
    with pytest.raises(ValueError, match="exceeds the smallest width"):
        dln_learning_coefficient([3, 2, 4], 3)
    with pytest.raises(ValueError, match="at least 2 widths"):
        dln_learning_coefficient([3], 0)
    with pytest.raises(ValueError):
        dln_learning_coefficient([3, 0, 4], 0)
    with pytest.raises(ValueError):
        dln_learning_coefficient([3, -2, 4], 0)
    with pytest.raises(ValueError):
        dln_learning_coefficient([3, 2, 4], -1)


# ---------------------------------------------------------------------------------------
# Normal crossings and potentials
# ---------------------------------------------------------------------------------------


def test_normal_crossing_learning_coefficient() -> None:
    assert normal_crossing_learning_coefficient([1]) == (0.5, 1)
    assert normal_crossing_learning_coefficient([1, 2]) == (0.25, 1)
    assert normal_crossing_learning_coefficient([2, 2, 1]) == (0.25, 2)
    assert normal_crossing_learning_coefficient([1, 1, 1]) == (0.5, 3)
    # A variable with exponent 0 is a flat direction: it changes neither λ nor m.
    assert normal_crossing_learning_coefficient([0, 3]) == (pytest.approx(1 / 6), 1)
    for bad in ([], [0, 0]):
        with pytest.raises(ValueError):
            normal_crossing_learning_coefficient(bad)
    with pytest.raises(ValueError):
        normal_crossing_learning_coefficient([-1, 2])
    with pytest.raises(TypeError):
        normal_crossing_learning_coefficient([1.5])  # type: ignore[list-item]


def test_sum_of_normal_crossings() -> None:
    assert sum_of_normal_crossings_learning_coefficient([[1], [1]]) == 1.0  # = quadratic, d=2
    assert sum_of_normal_crossings_learning_coefficient([[1, 2], [3]]) == pytest.approx(
        1 / 4 + 1 / 6
    )
    with pytest.raises(ValueError):
        sum_of_normal_crossings_learning_coefficient([])
    with pytest.raises(ValueError):
        sum_of_normal_crossings_learning_coefficient([[1], [0]])


def test_potentials_values_and_shapes() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    quad = quadratic_potential(3, curvature=2.0)
    assert quad.learning_coefficient == 1.5 and quad.dim == 3
    torch.testing.assert_close(quad(w), (w**2).sum(-1))
    nc = normal_crossing_potential([1, 0, 2])
    assert (nc.learning_coefficient, nc.multiplicity) == (0.25, 1)
    torch.testing.assert_close(nc(w), w[..., 0] ** 2 * w[..., 2] ** 4)
    snc = sum_of_normal_crossings_potential([[1, 2], [1]])
    assert snc.dim == 3 and snc.learning_coefficient == 0.75
    torch.testing.assert_close(snc(w), w[..., 0] ** 2 * w[..., 1] ** 4 + w[..., 2] ** 2)
    for pot in (quad, nc, snc):
        assert pot(torch.zeros(3, dtype=torch.float64)).item() == 0.0
        assert bool((pot(w) >= 0).all())
        assert pot(w).shape == (4, 5)
        with pytest.raises(ValueError, match="expects w of shape"):
            pot(torch.zeros(2, 4))
    with pytest.raises(ValueError):
        quadratic_potential(2, curvature=0.0)


def test_quadratic_potential_tempered_mean_is_d_over_2() -> None:
    """Under exp(−nβ K), K = (κ/2)‖w‖², w ~ N(0, 1/(nβκ)) and nβ E[K] = d/2 exactly."""
    d, kappa, nbeta, num = 4, 3.0, 500.0, 200_000
    pot = quadratic_potential(d, curvature=kappa)
    g = torch.Generator().manual_seed(1)
    w = torch.randn(num, d, generator=g, dtype=torch.float64) / math.sqrt(nbeta * kappa)
    samples = nbeta * pot(w)
    mean, se = samples.mean().item(), samples.std().item() / math.sqrt(num)
    assert abs(mean - pot.learning_coefficient) < 4 * se


@pytest.mark.parametrize(("widths", "rank"), [([3, 4, 4, 2], 1), ([4, 3, 3, 3, 4], 2)])
def test_dln_anchor_is_rank_r_with_unit_singular_values(widths: list[int], rank: int) -> None:
    layers = dln_anchor(widths, rank, seed=3)
    assert [tuple(w.shape) for w in layers] == [(b, a) for a, b in itertools.pairwise(widths)]
    product = layers[0]
    for w in layers[1:]:
        product = w @ product
    for w in [*layers, product]:  # float32 QR: singular values to 1e-6
        s = torch.linalg.svdvals(w.double())
        torch.testing.assert_close(
            s[:rank], torch.ones(rank, dtype=torch.float64), atol=1e-6, rtol=0
        )
        assert bool((s[rank:] < 1e-6).all())
    with pytest.raises(ValueError, match="exceeds the smallest width"):
        dln_anchor([3, 1, 3], 2)
    with pytest.raises(ValueError, match="at least 2 widths"):
        dln_anchor([3], 1)


def test_dln_potential_is_the_population_loss_of_the_network() -> None:
    """K(w) = E‖(W_M⋯W_1 − W₀)x‖² for x ~ N(0, I): with E[xxᵀ] = I, that is the network's
    squared error summed over the inputs x = e_1, …, e_{H_1}, computed here by nn layers."""
    widths, rank, seed = [3, 4, 4, 2], 1, 5
    pot = dln_potential(widths, rank, seed)
    assert pot.dim == 3 * 4 + 4 * 4 + 4 * 2
    assert pot.learning_coefficient == dln_learning_coefficient(widths, rank) == 3.0
    assert pot.multiplicity is None
    anchor = dln_anchor(widths, rank, seed)
    g = torch.Generator().manual_seed(0)
    w = 0.3 * torch.randn(6, pot.dim, generator=g, dtype=torch.float64)
    eye = torch.eye(widths[0], dtype=torch.float64)
    expected = []
    for row in w:
        net = torch.nn.Sequential(
            *[torch.nn.Linear(a, b, bias=False).double() for a, b in itertools.pairwise(widths)]
        )
        offset = 0
        with torch.no_grad():
            for layer, a in zip(net, anchor, strict=True):
                size = a.numel()
                layer.weight.copy_(a.double() + row[offset : offset + size].reshape(a.shape))
                offset += size
            true_net = torch.nn.Sequential(
                *[torch.nn.Linear(a.shape[1], a.shape[0], bias=False).double() for a in anchor]
            )
            for layer, a in zip(true_net, anchor, strict=True):
                layer.weight.copy_(a.double())
            expected.append(((net(eye) - true_net(eye)) ** 2).sum())
    torch.testing.assert_close(pot(w), torch.stack(expected))
    assert pot(torch.zeros(2, 3, pot.dim)).shape == (2, 3)
    assert float(pot(torch.zeros(pot.dim)).abs()) == 0.0
    with pytest.raises(ValueError, match="expects w of shape"):
        pot(torch.zeros(pot.dim + 1))


def test_dln_potential_is_singular_with_hessian_top_eigenvalue_2m() -> None:
    """Rescaling W_1 → 2W_1, W_2 → W_2/2 keeps the product: K = 0 off w = 0 (a singular
    model). The Hessian at 0 has top eigenvalue 2M, along the joint scaling of all layers
    (the step-size scale of the DLN tests)."""
    widths, rank = [3, 4, 4, 2], 1
    pot = dln_potential(widths, rank)
    anchor = [a.double() for a in dln_anchor(widths, rank)]
    shift = torch.cat([anchor[0].flatten(), -0.5 * anchor[1].flatten(), torch.zeros(8)])
    assert float(pot(shift.double())) < 1e-12
    hessian = torch.autograd.functional.hessian(pot, torch.zeros(pot.dim, dtype=torch.float64))
    top = torch.linalg.eigvalsh(hessian)[-1]
    assert float(top) == pytest.approx(2 * (len(widths) - 1), rel=1e-5)  # float32 anchor


@pytest.mark.parametrize("k", [1, 2, 3])
def test_normal_crossing_potential_tempered_mean_1d(k: int) -> None:
    """For K = w^{2k}: nβ E[K] = 1/(2k) exactly under exp(−nβ K) (a Gamma integral)."""
    pot = normal_crossing_potential([k])
    nbeta = 1e4

    def K(x: float) -> float:
        return pot(torch.tensor([x], dtype=torch.float64)).item()

    scale = nbeta ** (-1 / (2 * k))  # width of the posterior
    num = scipy.integrate.quad(lambda x: K(x) * math.exp(-nbeta * K(x)), 0, 50 * scale)[0]
    den = scipy.integrate.quad(lambda x: math.exp(-nbeta * K(x)), 0, 50 * scale)[0]
    assert nbeta * num / den == pytest.approx(pot.learning_coefficient, rel=1e-7)


# ---------------------------------------------------------------------------------------
# Exact TMS population loss (high-sparsity limit)
# ---------------------------------------------------------------------------------------


def _random_tms(seed: int, c: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    W = 0.9 * rng.standard_normal((2, c))
    b = rng.uniform(-0.6, 0.4, size=c)  # mixed signs, so kinks fall inside [0, 1]
    return W, b


def test_population_loss_simple_values() -> None:
    assert tms_population_loss(np.zeros((2, 6)), np.zeros(6)) == pytest.approx(1 / 3)
    assert tms_population_loss(np.eye(2), np.zeros(2)) == pytest.approx(0.0, abs=1e-15)
    # Zero weights, bias β > 0: each input costs 1/3 − β + β² + (c − 1)β².
    beta, c = 0.2, 5
    expected = 1 / 3 - beta + c * beta**2
    assert tms_population_loss(np.zeros((2, c)), np.full(c, beta)) == pytest.approx(expected)


def test_population_loss_matches_monte_carlo() -> None:
    W, b = _random_tms(0)
    c, num = W.shape[1], 1_000_000
    rng = np.random.default_rng(12345)
    feature = rng.integers(0, c, size=num)
    t = rng.uniform(0.0, 1.0, size=num)
    G = W.T @ W
    x = np.zeros((num, c))
    x[np.arange(num), feature] = t
    out = np.maximum(G[feature] * t[:, None] + b, 0.0)
    samples = ((x - out) ** 2).sum(axis=1)
    mean, se = samples.mean(), samples.std(ddof=1) / math.sqrt(num)
    exact = tms_population_loss(W, b)
    assert abs(exact - mean) < 4 * se, (exact, mean, se)
    # The check has teeth: raising the largest bias by half moves the loss by many SEs.
    b2 = b.copy()
    b2[np.argmax(b)] *= 1.5
    assert abs(tms_population_loss(W, b2) - mean) > 4 * se


def test_population_loss_matches_quad() -> None:
    for seed in range(3):
        W, b = _random_tms(seed)
        G, c = W.T @ W, W.shape[1]
        total = 0.0
        for i in range(c):
            kinks = [-b[j] / G[i, j] for j in range(c) if G[i, j] != 0]
            points = [p for p in kinks if 0 < p < 1]

            def integrand(t: float, i: int = i, G: np.ndarray = G, b: np.ndarray = b) -> float:
                c = b.shape[0]
                out = np.maximum(G[i] * t + b, 0.0)
                target = np.zeros(c)
                target[i] = t
                return float(((target - out) ** 2).sum())

            total += scipy.integrate.quad(integrand, 0, 1, points=points or None, epsabs=1e-13)[0]
        assert tms_population_loss(W, b) == pytest.approx(total / c, rel=1e-10, abs=1e-12)


def test_population_loss_batched_and_torch() -> None:
    pairs = [_random_tms(s) for s in range(4)]
    W = np.stack([p[0] for p in pairs]).reshape(2, 2, 2, 6)
    b = np.stack([p[1] for p in pairs]).reshape(2, 2, 6)
    batched = tms_population_loss(W, b)
    assert isinstance(batched, np.ndarray) and batched.shape == (2, 2)
    singles = np.array([tms_population_loss(*p) for p in pairs]).reshape(2, 2)
    np.testing.assert_allclose(batched, singles, rtol=1e-14)
    Wt = torch.tensor(W, requires_grad=True)
    bt = torch.tensor(b)
    lt = tms_population_loss_torch(Wt, bt)
    np.testing.assert_allclose(lt.detach().numpy(), singles, rtol=1e-14)
    assert tms_population_loss(Wt[0, 0], bt[0, 0]) == pytest.approx(singles[0, 0], rel=1e-14)
    # Autograd through the closed form matches central finite differences.
    lt.sum().backward()
    assert Wt.grad is not None
    h = 1e-6
    W_plus, W_minus = W.copy(), W.copy()
    W_plus[1, 0, 1, 3] += h
    W_minus[1, 0, 1, 3] -= h
    fd = tms_population_loss(W_plus[1, 0], b[1, 0]) - tms_population_loss(W_minus[1, 0], b[1, 0])
    assert Wt.grad[1, 0, 1, 3].item() == pytest.approx(fd / (2 * h), rel=1e-6, abs=1e-9)
    with pytest.raises(ValueError, match="b must have shape"):
        tms_population_loss(np.zeros((2, 6)), np.zeros(5))


# ---------------------------------------------------------------------------------------
# k-gon critical points (Chen et al. 2023)
# ---------------------------------------------------------------------------------------


def _fd_gradient(W: np.ndarray, b: np.ndarray, h: float = 1e-6) -> np.ndarray:
    theta = np.concatenate([W.ravel(), b])
    n_w = W.size

    def f(p: np.ndarray) -> float:
        return float(tms_population_loss(p[:n_w].reshape(W.shape), p[n_w:]))

    grad = np.empty_like(theta)
    for j in range(theta.size):
        e = np.zeros_like(theta)
        e[j] = h
        grad[j] = (f(theta + e) - f(theta - e)) / (2 * h)
    return grad


@pytest.mark.parametrize("variant", ["-", "+"])
@pytest.mark.parametrize("k", range(2, 7))
def test_kgon_is_critical_point(k: int, variant: str) -> None:
    W, b = kgon_critical_point(k, 6, variant=variant)
    assert W.shape == (2, 6) and b.shape == (6,)
    # Central differences (O(h) error at the ReLU kinks when b* = 0) ...
    assert np.abs(_fd_gradient(W, b)).max() < 1e-5
    # ... and the exact gradient of the closed form, by autograd.
    Wt = torch.tensor(W, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    tms_population_loss_torch(Wt, bt).backward()
    assert Wt.grad is not None and bt.grad is not None
    assert max(Wt.grad.abs().max().item(), bt.grad.abs().max().item()) < 1e-10
    # ... and the test can fail: stretch the polygon by 5 % and the gradient is large.
    assert np.abs(_fd_gradient(1.05 * W, b)).max() > 1e-3


def test_kgon_losses_closed_forms_and_monotone() -> None:
    c = 6
    for k in (2, 3, 4):
        # Exact reconstruction of k features, E[t²] = 1/3 for each of the c − k others.
        assert kgon_loss(k, c, variant="-") == pytest.approx((c - k) / (3 * c), rel=1e-14)
        # "+": each zero column with bias 1/(2c) saves 1/(4c²).
        plus = (c - k) / (3 * c) - (c - k) / (4 * c**2)
        assert kgon_loss(k, c, variant="+") == pytest.approx(plus, rel=1e-14)
        sol = kgon_solution(k, c)
        assert (sol.length, sol.bias) == (1.0, 0.0)
    for variant in ("-", "+"):
        losses = [kgon_loss(k, c, variant=variant) for k in range(2, c + 1)]
        assert all(a > b for a, b in itertools.pairwise(losses)), losses
    for k in (5, 6):
        sol = kgon_solution(k, c)
        assert sol.bias < 0 and sol.length > 1  # interference needs a negative bias
        assert kgon_loss(k, c, variant="+") <= kgon_loss(k, c, variant="-")


def test_kgon_optimum_is_a_minimum_of_the_symmetric_family() -> None:
    for k in (5, 6):
        sol = kgon_solution(k, 6)
        for dl, db in itertools.product((-1e-3, 0.0, 1e-3), repeat=2):
            W, b = theory.tms._kgon_params(
                k, 6, sol.length + dl, sol.bias + db, sol.unrepresented_biases, np
            )
            assert tms_population_loss(W, b) >= sol.loss - 1e-15


def test_kgon_variants_and_bad_input() -> None:
    sol = kgon_solution(4, 6, variant="-+")
    assert sol.label == "4+-"
    assert sol.unrepresented_biases == (1 / 12, -1 / 12)
    assert kgon_solution(6, 6, variant="+").label == "6"
    fixed = kgon_solution(5, 6, bias=0.0)
    assert fixed.bias == 0.0 and fixed.loss > kgon_loss(5, 6)
    with pytest.raises(ValueError):
        kgon_solution(7, 6)
    with pytest.raises(ValueError):
        kgon_solution(1, 6)
    for bad in ("+-+", "x", ""):
        with pytest.raises(ValueError, match="variant"):
            kgon_solution(4, 6, variant=bad)
    with pytest.raises(ValueError, match="bias"):
        kgon_solution(5, 6, bias="optimal")
