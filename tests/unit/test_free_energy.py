"""The O(1) free energy of a Morse–Bott minimum against brute-force integration, and its
terms at the c = 6 k-gons (theory.free_energy)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.special

from tms_slt.theory import kgon_critical_point, kgon_solution, tms_population_loss
from tms_slt.theory.free_energy import (
    MorseBottFreeEnergy,
    dead_column_prior_mass,
    gaussian_log_density,
    kgon_free_energy,
    morse_bott_free_energy,
)


def _brute_force_circle(n: float, h: float, g: float, a: float, r0: float, sigma: float) -> float:
    """−log ∫_{R³} exp(−n L) φ for L = ½h(r − r0)² + ½g(z − a(r − r0))², φ = N(0, σ² I₃).

    The θ integral is 2π (L and φ are rotation invariant); the (r, z) integral by dblquad
    over ±12 standard deviations of the Gaussian factor around the minimum (negligible tails).
    """
    w_r = 12 / math.sqrt(n * h)
    w_z = 12 / math.sqrt(n * g) + abs(a) * w_r

    def integrand(z: float, r: float) -> float:
        u = r - r0
        energy = n * (0.5 * h * u * u + 0.5 * g * (z - a * u) ** 2)
        return math.exp(-energy - (r * r + z * z) / (2 * sigma**2)) * r

    val, _ = scipy.integrate.dblquad(
        integrand, r0 - w_r, r0 + w_r, -w_z, w_z, epsabs=0, epsrel=1e-12
    )
    return -math.log(2 * math.pi * val * (2 * math.pi * sigma**2) ** -1.5)


def test_morse_bott_free_energy_matches_brute_force_on_a_circle_of_minima() -> None:
    """A circle of minima (radius r0, a rotation orbit) with two curved normal directions
    coupled by a: Hessian [[h + g a², −g a], [−g a, g]], det = h g. The Laplace error is
    c₁/n + O(1/n²), so the Richardson extrapolate 2Δ(2n) − Δ(n) of the difference Δ must
    vanish to O(1/n²); dropping any O(1) term (orbit length log 2π r0 ≈ 2.0, the prior
    normalisation (3/2) log 2πσ², ½ log(h g/4π²)) leaves an O(1) residual."""
    h, g, a, r0, sigma = 0.3, 2.0, 0.7, 1.2, 0.8
    # The normal-Hessian eigenvalues (of L, not nL).
    H = np.array([[h + g * a * a, -g * a], [-g * a, g]])
    curv = np.linalg.eigvalsh(H)
    assert np.prod(curv) == pytest.approx(h * g)
    log_measure = math.log(2 * math.pi * r0) + gaussian_log_density([r0, 0.0, 0.0], sigma)
    F = MorseBottFreeEnergy(0.0, tuple(curv), log_measure)
    assert F.llc == 1.0
    n1, n2 = 2000.0, 4000.0
    d1 = _brute_force_circle(n1, h, g, a, r0, sigma) - F(n1)
    d2 = _brute_force_circle(n2, h, g, a, r0, sigma) - F(n2)
    assert abs(d1) < 20 / (n1 * min(curv))  # O(1/n) with an O(1) coefficient
    assert abs(2 * d2 - d1) < 50 / (n1 * min(curv)) ** 2
    # Without the orbit length the residual is O(1): the test can fail.
    wrong = morse_bott_free_energy(
        n2, loss=0.0, curvatures=curv, log_prior_measure=log_measure - math.log(2 * math.pi * r0)
    )
    assert abs(_brute_force_circle(n2, h, g, a, r0, sigma) - wrong) > 1.0


def test_morse_bott_free_energy_on_a_flat_interval_with_cubic_walls() -> None:
    """L(x, y) = ½h x² + κ((|y| − a)⁺)³: minimum set M = {0} × [−a, a] (a flat region with
    cubic edges, as the dead column of 5−), curvature h normal to it. Laplace:
    F = ½ log n + ½ log(h/2π) − log ∫_M φ, ∫_M φ = (2πσ²)^{−1/2}(2Φ(a/σ) − 1). The edges add
    ∫_a^∞ φ(0, y) e^{−nκ(y − a)³} dy ≈ φ(0, a) Γ(4/3)(nκ)^{−1/3} each; with that term the
    remaining error is the next one, 2|∂_yφ(0, a)| Γ(2/3)/3 (nκ)^{−2/3} relative to ∫_M φ."""
    h, kappa, a, sigma = 0.5, 3.0, 0.4, 1.3

    def phi(x: float, y: float) -> float:
        return math.exp(-(x * x + y * y) / (2 * sigma**2)) / (2 * math.pi * sigma**2)

    mass = (2 * scipy.special.ndtr(a / sigma) - 1) / math.sqrt(2 * math.pi * sigma**2)
    for n in (1e4, 1e6):
        wx = 12 / math.sqrt(n * h)
        wall = 12 / (n * kappa) ** (1 / 3)

        def integrand(y: float, x: float, n: float = n) -> float:
            edge = max(abs(y) - a, 0.0)
            return math.exp(-n * (0.5 * h * x * x + kappa * edge**3)) * phi(x, y)

        val = 0.0
        for lo, hi in ((-a - wall, -a), (-a, a), (a, a + wall)):
            val += scipy.integrate.dblquad(integrand, -wx, wx, lo, hi, epsabs=0, epsrel=1e-11)[0]
        brute = -math.log(val)
        F = morse_bott_free_energy(n, loss=0.0, curvatures=[h], log_prior_measure=math.log(mass))
        edge_term = 2 * phi(0, a) * math.gamma(4 / 3) * (n * kappa) ** (-1 / 3) / mass
        next_term = 2 * phi(0, a) * a / sigma**2 * math.gamma(2 / 3) / 3 * (n * kappa) ** (-2 / 3)
        # O(1/n) from the x direction and the x–y coupling of φ: far below the edge terms.
        assert abs(brute - (F - math.log1p(edge_term))) < 2 * next_term / mass + 10 / n
        assert abs(brute - F) > 0.5 * edge_term  # the edge term is really there


def test_dead_column_flat_region_is_exactly_flat_and_its_mass() -> None:
    """At 5− the loss does not change for (w, β) of the dead column inside A and changes
    just outside it; the prior mass of A (quad) agrees with Monte Carlo within 4 SE."""
    W, b = kgon_critical_point(5, 6, variant="-")
    sol = kgon_solution(5, 6, variant="-")
    L0 = sol.loss
    g = np.random.default_rng(0)
    pts = g.normal(size=(400_000, 3))
    w, beta = pts[:, :2], pts[:, 2]
    proj = w @ W[:, :5]  # (N, 5): W_i · w
    inside = (
        (beta + (w * w).sum(1) <= 0) & (proj.max(1) + beta <= 0) & (proj.max(1) + sol.bias <= 0)
    )
    mc = inside.mean()
    se = math.sqrt(mc * (1 - mc) / len(inside))
    mass = dead_column_prior_mass(W[:, :5], sol.bias)
    assert abs(mass - mc) < 4 * se
    assert 0.01 < mass < 0.02
    # Flat inside, not flat outside (loss at the boundary points pushed out by 0.05).
    Wt = np.repeat(W[None], 200, 0)
    bt = np.repeat(b[None], 200, 0)
    sel = np.flatnonzero(inside)[:200]
    Wt[:, :, 5], bt[:, 5] = w[sel], beta[sel]
    assert np.abs(tms_population_loss(Wt, bt) - L0).max() < 1e-12
    outside = np.flatnonzero(~inside & (np.abs(beta) < 1) & (np.linalg.norm(w, axis=1) < 0.5))
    Wt[:, :, 5], bt[:, 5] = w[outside[:200]], beta[outside[:200]]
    assert np.abs(tms_population_loss(Wt, bt) - L0).min() > 1e-9


def test_kgon_symmetric_copies_by_enumeration() -> None:
    """c!/(k p! q!) rotation circles per label: count the distinct configurations W P over all
    permutations P of the 6 features, each rotated so that its lowest-index live column lies
    on the positive x axis."""

    def circles(k: int, variant: str) -> int:
        W, b = kgon_critical_point(k, 6, variant=variant)
        seen = set()
        for perm in itertools.permutations(range(6)):
            Wp, bp = W[:, perm], b[list(perm)]
            first = int(np.flatnonzero(np.linalg.norm(Wp, axis=0) > 0.5)[0])
            t = math.atan2(Wp[1, first], Wp[0, first])
            R = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
            seen.add(tuple(np.round(np.concatenate([(R @ Wp).ravel(), bp]), 6)))
        return len(seen)

    for k, v in ((6, "-"), (5, "+"), (5, "-")):
        assert circles(k, v) == round(math.exp(kgon_free_energy(k, 6, v).log_copies))


def test_kgon_free_energy_terms_at_c6() -> None:
    """The pieces add up; λ and the number of curved eigenvalues agree; the 5− term the
    leading order replaces (½‖w*‖² at one point of the flat set) against the flat set's
    mass; σ enters as it should (a larger prior spreads the density over more volume)."""
    F6, F5p, F5m = (kgon_free_energy(k, 6, v) for k, v in ((6, "-"), (5, "+"), (5, "-")))
    assert (F6.llc, F5p.llc, F5m.llc) == (8.5, 8.5, 7.0)
    assert len(F5m.curvatures) == 14 and len(F6.curvatures) == 17
    for F in (F6, F5p, F5m):
        assert F.constant == pytest.approx(sum(F.terms().values()), abs=1e-12)
        assert F(1e3) == pytest.approx(1e3 * F.loss + F.llc * math.log(1e3) + F.constant)
    assert math.exp(F5m.log_flat_mass) == pytest.approx(0.0141, abs=0.0005)
    assert F6.log_flat_mass == 0.0
    # The 6-gon has three more, soft, curved directions: ½ Σ log h is lower by ≈ 3.2 nats.
    half_log_h = {
        F.label: F.log_det_term + 0.5 * len(F.curvatures) * math.log(2 * math.pi) for F in (F6, F5m)
    }
    assert half_log_h["6"] - half_log_h["5-"] == pytest.approx(-3.23, abs=0.01)
    wide = kgon_free_energy(6, 6, "-", sigma=2.0)
    assert wide.log_prior_density < F6.log_prior_density
    with pytest.raises(ValueError, match="Morse–Bott"):
        kgon_free_energy(4, 6, "--")
    with pytest.raises(ValueError, match="sigma"):
        kgon_free_energy(6, 6, sigma=0.0)


def test_corrected_crossing_5minus_to_6() -> None:
    """With every O(1) term the 5− → 6 crossing of F_n moves from the leading order's ≈ 600
    down to ≈ 112 (issue #20: ≈ 114 from rounded terms)."""
    from tms_slt.transitions import bayesian_crossings

    F = {lab: kgon_free_energy(k, 6, v) for k, v, lab in ((6, "-", "6"), (5, "-", "5-"))}
    found = bayesian_crossings(
        {k: f.loss for k, f in F.items()},
        {k: f.llc for k, f in F.items()},
        constants={k: f.constant for k, f in F.items()},
    )
    last = found[-1]
    assert (last.before, last.after) == ("5-", "6")
    assert 100 < last.location < 125
    lead = bayesian_crossings(
        {k: f.loss for k, f in F.items()},
        {k: f.llc for k, f in F.items()},
        constants={k: f.leading_order_constant for k, f in F.items()},
    )
    assert 590 < lead[-1].location < 610
