"""`theory.kgon_llc`: λ of the regular k-gons from the rank of the exact-loss Hessian.

Checked against an independent computation: a central finite-difference Hessian of the numpy
population loss (no autograd, no torch), whose rank must match."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tms_slt.theory import (
    kgon_critical_point,
    kgon_llc,
    kgon_llc_of_label,
    kgon_llc_report,
    tms_population_loss,
)


def _fd_hessian_rank(k: int, c: int, variant: str) -> tuple[int, float]:
    """Rank of a central-difference Hessian of `tms_population_loss` (numpy) and its most
    negative eigenvalue."""
    W, b = kgon_critical_point(k, c, variant=variant)
    x0 = np.concatenate([W.ravel(), b])
    m = W.shape[0]

    def f(x: np.ndarray) -> float:
        return float(tms_population_loss(x[: m * c].reshape(m, c), x[m * c :]))

    h = 1e-4
    d = x0.size
    H = np.zeros((d, d))
    for i in range(d):
        for j in range(i, d):
            e_i, e_j = np.eye(d)[i] * h, np.eye(d)[j] * h
            H[i, j] = H[j, i] = (
                f(x0 + e_i + e_j) - f(x0 + e_i - e_j) - f(x0 - e_i + e_j) + f(x0 - e_i - e_j)
            ) / (4 * h * h)
    ev = np.linalg.eigvalsh(H)
    return int((ev > 1e-5 * ev.max()).sum()), float(ev.min())


@pytest.mark.parametrize(
    ("k", "variant", "expected"),
    [(6, "-", Fraction(17, 2)), (5, "+", Fraction(17, 2)), (5, "-", Fraction(7))],
)
def test_c6_morse_bott_kgons(k, variant, expected):
    assert kgon_llc(k, 6, variant) == expected
    rank, most_negative = _fd_hessian_rank(k, 6, variant)
    assert Fraction(rank, 2) == expected
    assert most_negative > -1e-5


def test_report_gives_the_evidence():
    rep = kgon_llc_report(5, 6, "-")
    assert rep.label == "5-"
    assert rep.grad_norm < 1e-9
    assert rep.index == 0
    assert rep.nullity == 4  # rotation, the dead column W₆ (2) and its negative bias
    assert "Morse–Bott" in rep.reason
    assert len(rep.eigenvalues) == 18


@pytest.mark.parametrize(("k", "variant"), [(4, "-"), (4, "+"), (3, "-"), (2, "+")])
def test_small_kgons_on_the_relu_kink_are_unknown(k, variant):
    rep = kgon_llc_report(k, 6, variant)
    assert rep.llc is None
    assert "kink" in rep.reason


def test_the_c_gon_of_c5():
    assert kgon_llc(5, 5) == Fraction(14, 2)


def test_label_lookup():
    assert kgon_llc_of_label("5+", 6) == Fraction(17, 2)
    assert kgon_llc_of_label("6", 6) == Fraction(17, 2)
    assert kgon_llc_of_label("5-", 6) == 7
    assert kgon_llc_of_label("4++", 6) is None
    assert kgon_llc_of_label("5+", 7) is None  # 5 + one sign is not a c = 7 label
    assert kgon_llc_of_label("junk", 6) is None


def test_kgon_variants_are_every_sign_pattern_once():
    from tms_slt.theory import kgon_variants

    assert kgon_variants(6, 6) == [""]
    assert kgon_variants(4, 6) == ["++", "+-", "--"]
    for k in range(2, 7):
        found = kgon_variants(k, 6)
        assert len(found) == 6 - k + 1 and len(set(found)) == len(found)
        assert all(len(v) == 6 - k and set(v) <= {"+", "-"} for v in found)
