"""transitions.critical.match_critical_points on synthetic plateaus near and far from the
k-gon critical points of the exact c = 6 loss."""

from __future__ import annotations

import math

import numpy as np
import torch

from tms_slt.theory import kgon_critical_point, kgon_loss
from tms_slt.transitions.critical import match_critical_points


def _moved(W: np.ndarray, b: np.ndarray, angle: float, perm: list[int]) -> tuple:
    R = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return (R @ W)[:, perm], b[perm]


def test_points_near_kgons_are_matched_to_them() -> None:
    """Rotated, relabelled k-gons with a 1e-3 perturbation (a plateau near the critical
    point) are matched to that k-gon; 5− anywhere inside its dead column's flat set too."""
    g = np.random.default_rng(0)
    cases = []
    for k, v, label in ((6, "-", "6"), (5, "+", "5+"), (5, "-", "5-"), (4, "++", "4++")):
        W, b = kgon_critical_point(k, 6, variant=v)
        if label == "5-":
            W[:, 5], b[5] = (0.05, -0.02), -0.5  # a point inside the flat set, not W₆ = 0
        W, b = _moved(W, b, g.uniform(0, 2 * math.pi), list(g.permutation(6)))
        cases.append((W + 1e-3 * g.normal(size=W.shape), b + 1e-3 * g.normal(size=b.shape), label))
    W = torch.tensor(np.stack([c[0] for c in cases]))
    b = torch.tensor(np.stack([c[1] for c in cases]))
    found = match_critical_points(W, b)
    for m, (_, _, label) in zip(found, cases, strict=True):
        assert m.label == label, m.reason
        assert m.refined_grad_norm < 1e-7
        assert m.shift < 0.02  # the perturbation was ~1e-3 per coordinate
        assert abs(m.critical_loss - m.loss) < 1e-3
    assert abs(found[0].critical_loss - kgon_loss(6, 6)) < 1e-9


def test_points_far_from_critical_points_are_not_matched() -> None:
    """Three plateaus that carry a k-gon label but are not at the critical point: a 6-gon
    with one column turned by 0.5 rad, a pentagon shrunk to 0.75 of its length (label 5−,
    loss far above the 5−'s), and a Xavier-normal start. None is matched."""
    W6, b6 = kgon_critical_point(6, 6)
    turned = W6.copy()
    R = np.array([[math.cos(0.5), -math.sin(0.5)], [math.sin(0.5), math.cos(0.5)]])
    turned[:, 2] = R @ turned[:, 2]
    W5, b5 = kgon_critical_point(5, 6, variant="-")
    g = torch.Generator().manual_seed(0)
    W0 = torch.randn(2, 6, generator=g, dtype=torch.float64)
    b0 = torch.zeros(6, dtype=torch.float64)
    W = torch.stack([torch.tensor(turned), torch.tensor(0.75 * W5), W0])
    b = torch.stack([torch.tensor(b6), torch.tensor(b5), b0])
    found = match_critical_points(W, b)
    assert found[1].point_label == "5-"
    assert found[1].loss > 1.5 * kgon_loss(5, 6, variant="-")
    for m in found:
        assert not m.matched, m
        assert m.reason != "matched"


def test_loss_tolerance_is_applied() -> None:
    """A point whose refinement reaches the 6-gon but whose own loss is 6% above it is
    matched at loss_rtol = 0.1 and not at 0.05 (the tolerance, not chance, decides)."""
    W, b = kgon_critical_point(6, 6)
    L6 = kgon_loss(6, 6)
    # Scale the hexagon radially until the loss is 6% above L6 (the loss is quadratic there).
    from tms_slt.theory import tms_population_loss

    lo, hi = 1.0, 1.2
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if tms_population_loss(mid * W, b) < 1.06 * L6 else (lo, mid)
    Wt, bt = torch.tensor(lo * W)[None], torch.tensor(b)[None]
    assert match_critical_points(Wt, bt, loss_rtol=0.1)[0].label == "6"
    assert match_critical_points(Wt, bt, loss_rtol=0.05)[0].label is None
