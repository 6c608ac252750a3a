"""Plateaus matched to critical points of the exact TMS loss (Chen et al. 2023, c features,
m = 2, one-hot data).

Chen et al. read SGD plateaus as visits to the regular k-gon critical points, and attach to a
plateau the LLC of the k-gon its label names. A label is a coarse summary (how many columns
are longer than 0.5, which dead columns are dead): a checkpoint can carry the label "6" long
before it is near the 6-gon (step 0 of a Xavier start often does). :func:`match_critical_points`
gives a point a critical point only when it is near one:

1. **refined**: the nearest zero of ∇L from the point, by Levenberg–Marquardt on ½‖∇L‖²
   (Δ = −(H² + μI)⁻¹ H ∇L, H = ∇²L of the exact population loss, μ adapted per point), so
   saddles are found as well as minima;
2. the refinement converged (‖∇L‖ ≤ ``grad_tol`` at the refined point) and moved the point by
   at most ``max_shift`` (Euclidean, in the 3c parameters);
3. the refined point is a regular k-gon (`geometry` regular residual ≤ ``residual_tol``)
   whose exact loss equals that of `theory.kgon_solution` for its label (to 1e-7: it *is*
   that critical point, not another one with the same label);
4. the point's own loss is within ``loss_rtol`` (relative) of the critical point's, and its
   own regular residual is at most ``residual_tol``.

Anything else is unmatched, with the first condition that failed as the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["CriticalMatch", "match_critical_points"]


@dataclass(frozen=True)
class CriticalMatch:
    """What :func:`match_critical_points` found for one point.

    Attributes:
        label: k-gon label of the matched critical point (`geometry` convention), or None.
        point_label: the point's own label.
        loss: exact population loss at the point.
        critical_loss: exact loss at the refined critical point (NaN if none converged).
        grad_norm, refined_grad_norm: ‖∇L‖ at the point and at the refined point.
        shift: ‖w_refined − w‖ over the 3c parameters.
        residual, refined_residual: regular-k-gon residual of the point and of the refined
            point (`geometry.classify`: angular gaps + relative norm spread).
        reason: "matched" or the first condition that failed.
    """

    label: str | None
    point_label: str
    loss: float
    critical_loss: float
    grad_norm: float
    refined_grad_norm: float
    shift: float
    residual: float
    refined_residual: float
    reason: str

    @property
    def matched(self) -> bool:
        return self.label is not None


def _loss_flat(x: Tensor, c: int) -> Tensor:
    from tms_slt.theory import tms_population_loss_torch

    return tms_population_loss_torch(x[: 2 * c].reshape(2, c), x[2 * c :])


def _grad_and_hessian(x: Tensor, c: int) -> tuple[Tensor, Tensor]:
    f = lambda v: _loss_flat(v, c)  # noqa: E731
    g = torch.func.vmap(torch.func.grad(f))(x)
    H = torch.func.vmap(torch.func.hessian(f))(x)
    return g, H


def _refine(x: Tensor, c: int, steps: int) -> Tensor:
    """Levenberg–Marquardt on ½‖∇L‖², batched over rows of x (B, 3c), float64."""
    mu = torch.full((x.shape[0],), 1e-4, dtype=x.dtype)
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    g, H = _grad_and_hessian(x, c)
    gn = g.norm(dim=-1)
    for _ in range(steps):
        A = H @ H + mu[:, None, None] * eye
        step = -torch.linalg.solve(A, (H @ g[..., None]))[..., 0]
        x_new = x + step
        g_new, H_new = _grad_and_hessian(x_new, c)
        gn_new = g_new.norm(dim=-1)
        better = gn_new < gn
        x = torch.where(better[:, None], x_new, x)
        g = torch.where(better[:, None], g_new, g)
        H = torch.where(better[:, None, None], H_new, H)
        gn = torch.where(better, gn_new, gn)
        mu = torch.where(better, mu / 3, mu * 4).clamp(1e-14, 1e6)
        if bool((gn < 1e-13).all()):
            break
    return x


def match_critical_points(
    W: Tensor | np.ndarray,
    b: Tensor | np.ndarray,
    *,
    loss_rtol: float = 0.05,
    grad_tol: float = 1e-7,
    max_shift: float = 0.5,
    residual_tol: float = 0.05,
    steps: int = 60,
) -> list[CriticalMatch]:
    """Match each point (W (N, 2, c), b (N, c)) to the regular k-gon critical point it is
    near, or to none (module docstring for the conditions).

    Args:
        W, b: N points of the c-feature TMS with m = 2 (any float dtype; computed in float64).
        loss_rtol: |L(w) − L(w_crit)| ≤ loss_rtol · L(w_crit) for a match (5%: the issue's
            "loss within 5% of the 6-gon's 0.0482").
        grad_tol: ‖∇L‖ at the refined point for it to count as critical (the exact loss in
            float64 reaches ~1e-12 at a k-gon; 1e-7 leaves room for kinks, where L is C¹).
        max_shift: largest distance from the point to its refined critical point. Generous
            (0.5, against column lengths ≈ 1.2) because the k-gons have soft directions
            (h ~ 1e-2) along which a point with nearly the critical loss can lie ~0.3 away;
            the loss and geometry conditions are the sharp ones.
        residual_tol: largest regular-k-gon residual of the point and of the refined point.
        steps: Levenberg–Marquardt iterations.

    Returns:
        One :class:`CriticalMatch` per point, in order.
    """
    from tms_slt.geometry import classify_batch
    from tms_slt.theory import kgon_solution

    W = torch.as_tensor(W).detach().to(torch.float64).cpu()
    b = torch.as_tensor(b).detach().to(torch.float64).cpu()
    if W.ndim != 3 or W.shape[1] != 2 or b.shape != (W.shape[0], W.shape[2]):
        raise ValueError(f"need W (N, 2, c) and b (N, c), got {tuple(W.shape)}, {tuple(b.shape)}")
    c = W.shape[-1]
    x = torch.cat([W.reshape(W.shape[0], -1), b], dim=1)
    with torch.no_grad():
        g0, _ = _grad_and_hessian(x, c)
        refined = _refine(x, c, steps)
        g1, _ = _grad_and_hessian(refined, c)
        loss0 = torch.func.vmap(lambda v: _loss_flat(v, c))(x)
        loss1 = torch.func.vmap(lambda v: _loss_flat(v, c))(refined)
    Wr, br = refined[:, : 2 * c].reshape(-1, 2, c), refined[:, 2 * c :]
    before = classify_batch(W, b)
    after = classify_batch(Wr, br)
    out = []
    for i in range(x.shape[0]):
        cfg, crit = before[i], after[i]
        shift = float((refined[i] - x[i]).norm())
        L0, L1 = float(loss0[i]), float(loss1[i])
        ok_grad = float(g1[i].norm()) <= grad_tol
        reason = "matched"
        theory_loss = math.nan
        if ok_grad and 2 <= crit.k <= c:
            try:
                theory_loss = kgon_solution(
                    crit.k, c, "auto", crit.label[len(str(crit.k)) :] or "-"
                ).loss
            except ValueError:
                theory_loss = math.nan
        if not ok_grad:
            reason = f"refinement did not reach a critical point (‖∇L‖ = {float(g1[i].norm()):.1e})"
        elif shift > max_shift:
            reason = f"refined critical point is {shift:.2f} away"
        elif not crit.is_regular or crit.regular_residual > residual_tol:
            reason = f"critical point is not a regular k-gon (residual {crit.regular_residual:.2f})"
        elif not (abs(L1 - theory_loss) <= 1e-7):
            reason = f"critical point is not the {crit.label} k-gon (loss {L1:.5f})"
        elif abs(L0 - L1) > loss_rtol * L1:
            reason = f"loss {L0:.4f} not within {loss_rtol:.0%} of {crit.label}'s {L1:.4f}"
        elif cfg.regular_residual > residual_tol:
            reason = f"point is not near-regular (residual {cfg.regular_residual:.2f})"
        out.append(
            CriticalMatch(
                label=crit.label if reason == "matched" else None,
                point_label=cfg.label,
                loss=L0,
                critical_loss=L1 if ok_grad else math.nan,
                grad_norm=float(g0[i].norm()),
                refined_grad_norm=float(g1[i].norm()),
                shift=shift,
                residual=float(cfg.regular_residual),
                refined_residual=float(crit.regular_residual),
                reason=reason,
            )
        )
    return out
