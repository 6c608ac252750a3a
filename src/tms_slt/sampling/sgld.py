"""Localized, tempered SGLD as a pure kernel over explicit state.

Lau, Furman, Wang, Murfet, Wei 2023 (arXiv 2308.12108), the SGLD update:

    w ← w − (ε/2) ∇U(w) + N(0, ε I),   U(w) = nβ L_m(w) + (γ/2)‖w − w*‖² + (δ/2)‖w‖²,

with ε the step size, nβ the inverse temperature times n, γ the localization
strength, w* the anchor (the point whose LLC is estimated), δ an optional
weight decay and L_m the minibatch loss. Parameters are tuples of tensors with
any leading (batch) dims; `loss_and_grad(params, batch)` returns one loss per leading
index, so one gradient evaluation serves every checkpoint and chain. Noise is
drawn by the caller and passed in: same noise ⇒ same trajectory.

ε, nβ and γ may be tensors broadcastable to the loss's leading shape (one value per
chain, say), so a grid of settings runs as one batched computation
(`tms_slt.sampling.calibrate`).

With `mala=True` every step also returns the Metropolis-adjusted Langevin (MALA)
acceptance probability of the proposal (Roberts & Tweedie 1996; used by Lau et al.
2023, appendix on step-size selection, to judge ε):

    α(w → w') = min(1, exp(U(w) − U(w') + log q(w | w') − log q(w' | w))),
    log q(b | a) = −‖b − a + (ε/2)∇U(a)‖² / (2ε),

with U evaluated on the same minibatch at both points (one extra gradient call).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

Params = tuple[Tensor, ...]
LossFn = Callable[[Params, Any], Tensor]
LossAndGrad = Callable[[Params, Any], tuple[Tensor, Params]]
Coefficient = float | Tensor


def autograd_loss_and_grad(loss_fn: LossFn) -> LossAndGrad:
    """Wrap `loss_fn(params, batch) -> (...)` into (loss, grads) by one autograd call.

    Chains are independent, so the gradient of the summed loss is each chain's own.
    """

    def loss_and_grad(params: Params, batch: Any) -> tuple[Tensor, Params]:
        leaves = tuple(p.detach().requires_grad_(True) for p in params)
        with torch.enable_grad():
            loss = loss_fn(leaves, batch)
            grads = torch.autograd.grad(loss.sum(), leaves)
        return loss.detach(), grads

    return loss_and_grad


class SGLDState(NamedTuple):
    """Current parameters, the anchor w* they are localized around, and the step count."""

    params: Params
    anchor: Params
    step: int


class SGLDInfo(NamedTuple):
    """Per-step diagnostics, each of shape (...) = the loss's leading shape.

    loss: minibatch loss L_m at the parameters *before* the step.
    grad_norm: ‖∇L_m‖ over all parameters.
    distance: ‖w − w*‖ before the step.
    mala_accept: MALA acceptance probability of the step's proposal (None unless the
        kernel was built with `mala=True`).
    """

    loss: Tensor
    grad_norm: Tensor
    distance: Tensor
    mala_accept: Tensor | None = None


def _sq_norm(tensors: Sequence[Tensor], event_ndims: Sequence[int]) -> Tensor:
    """Sum of squares over each tensor's trailing `event_ndims` dims, added over tensors."""
    total = None
    for t, k in zip(tensors, event_ndims, strict=True):
        s = t.square().sum(dim=tuple(range(-k, 0))) if k else t.square()
        total = s if total is None else total + s
    return total


def _per_model(value: Coefficient, event_ndims: int) -> Coefficient:
    """A coefficient shaped like the leading dims, made to broadcast against a parameter."""
    if isinstance(value, Tensor):
        return value.reshape(*value.shape, *([1] * event_ndims))
    return value


def _check(name: str, value: Coefficient, *, allow_zero: bool) -> None:
    ok = (value >= 0) if allow_zero else (value > 0)
    if isinstance(value, Tensor):
        ok = bool(torch.all(ok)) and bool(torch.isfinite(value).all())
    if not ok:
        sign = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be {sign}, got {value}")


@dataclass(frozen=True)
class SGLD:
    """The SGLD kernel: `init(params)` then repeatedly `step(state, batch, noise)`.

    Args:
        loss_and_grad: (params, batch) -> (loss of shape (...), one per chain;
            gradients shaped like params). `autograd_loss_and_grad` builds one
            from a plain loss function.
        event_ndims: for each parameter, how many trailing dims belong to one
            model (e.g. 2 for W (..., m, n), 1 for b (..., n)); the rest are batch.
        step_size: ε > 0, a float or a tensor broadcastable to the leading shape (...).
        nbeta: nβ > 0, float or tensor as for ε.
        localization: γ ≥ 0, float or tensor as for ε.
        weight_decay: δ ≥ 0 (a Gaussian prior centred at 0).
        bounding_box: if set, clamp each coordinate to w* ± this after each step.
        mala: also compute the MALA acceptance probability of every step (costs a
            second `loss_and_grad` call per step).
    """

    loss_and_grad: LossAndGrad
    event_ndims: tuple[int, ...]
    step_size: Coefficient
    nbeta: Coefficient
    localization: Coefficient = 0.0
    weight_decay: float = 0.0
    bounding_box: float | None = None
    mala: bool = False

    def __post_init__(self) -> None:
        _check("step_size (ε)", self.step_size, allow_zero=False)
        _check("nbeta (nβ)", self.nbeta, allow_zero=False)
        _check("localization (γ)", self.localization, allow_zero=True)
        _check("weight_decay (δ)", self.weight_decay, allow_zero=True)
        if self.bounding_box is not None and not self.bounding_box > 0:
            raise ValueError(f"bounding_box must be positive, got {self.bounding_box}")

    def init(self, params: Params, anchor: Params | None = None) -> SGLDState:
        """Start at `params`, localized around `anchor` (default: the start)."""
        params = tuple(p.detach() for p in params)
        anchor = params if anchor is None else tuple(a.detach() for a in anchor)
        if len(params) != len(self.event_ndims):
            raise ValueError(
                f"expected {len(self.event_ndims)} parameter tensors, got {len(params)}"
            )
        return SGLDState(params, anchor, 0)

    def potential_grad(self, params: Params, anchor: Params, grads: Params) -> Params:
        """∇U(w) = nβ ∇L_m(w) + γ(w − w*) + δ w, parameter by parameter."""
        out = []
        for p, a, g, k in zip(params, anchor, grads, self.event_ndims, strict=True):
            d = _per_model(self.nbeta, k) * g
            if isinstance(self.localization, Tensor) or self.localization:
                d = d + _per_model(self.localization, k) * (p - a)
            if self.weight_decay:
                d = d + self.weight_decay * p
            out.append(d)
        return tuple(out)

    def drift(self, params: Params, anchor: Params, grads: Params) -> Params:
        """(ε/2)∇U(w), the deterministic part of the step."""
        return tuple(
            (0.5 * _per_model(self.step_size, k)) * d
            for d, k in zip(
                self.potential_grad(params, anchor, grads), self.event_ndims, strict=True
            )
        )

    def potential(self, loss: Tensor, params: Params, anchor: Params) -> Tensor:
        """U(w) = nβ L_m(w) + (γ/2)‖w − w*‖² + (δ/2)‖w‖², shape (...)."""
        u = self.nbeta * loss
        if isinstance(self.localization, Tensor) or self.localization:
            delta = tuple(p - a for p, a in zip(params, anchor, strict=True))
            u = u + 0.5 * self.localization * _sq_norm(delta, self.event_ndims)
        if self.weight_decay:
            u = u + 0.5 * self.weight_decay * _sq_norm(params, self.event_ndims)
        return u

    def _log_q(self, to: Params, frm: Params, drift_frm: Params) -> Tensor:
        """log q(to | frm) = −‖to − frm + (ε/2)∇U(frm)‖²/(2ε), up to a constant."""
        diff = tuple(t - f + d for t, f, d in zip(to, frm, drift_frm, strict=True))
        return -_sq_norm(diff, self.event_ndims) / (2.0 * self.step_size)

    def mala_acceptance(
        self,
        old: tuple[Params, Tensor, Params],
        new: tuple[Params, Tensor, Params],
        anchor: Params,
        old_drift: Params | None = None,
    ) -> Tensor:
        """MALA acceptance probability min(1, π(w')q(w|w')/(π(w)q(w'|w))), shape (...).

        `old` and `new` are (params, loss, grads) at the current point and the proposal;
        `old_drift` is the step's drift at the current point, if already computed.
        """
        (p0, l0, g0), (p1, l1, g1) = old, new
        if old_drift is None:
            old_drift = self.drift(p0, anchor, g0)
        log_alpha = (
            self.potential(l0, p0, anchor)
            - self.potential(l1, p1, anchor)
            + self._log_q(p0, p1, self.drift(p1, anchor, g1))
            - self._log_q(p1, p0, old_drift)
        )
        return torch.exp(log_alpha.clamp(max=0.0)).nan_to_num(0.0)

    def update(
        self, params: Params, anchor: Params, batch: Any, noise: Params
    ) -> tuple[Params, SGLDInfo]:
        """The pure tensor part of a step: new parameters and the step's diagnostics."""
        loss, grads = self.loss_and_grad(params, batch)
        drifts = self.drift(params, anchor, grads)
        new = []
        for p, a, d, z, k in zip(params, anchor, drifts, noise, self.event_ndims, strict=True):
            eps = _per_model(self.step_size, k)
            q = p - d + (eps**0.5) * z
            if self.bounding_box is not None:
                q = torch.minimum(torch.maximum(q, a - self.bounding_box), a + self.bounding_box)
            new.append(q)
        new = tuple(new)
        accept = None
        if self.mala:
            new_loss, new_grads = self.loss_and_grad(new, batch)
            accept = self.mala_acceptance(
                (params, loss, grads), (new, new_loss, new_grads), anchor, drifts
            )
        delta = tuple(p - a for p, a in zip(params, anchor, strict=True))
        info = SGLDInfo(
            loss=loss,
            grad_norm=_sq_norm(grads, self.event_ndims).sqrt(),
            distance=_sq_norm(delta, self.event_ndims).sqrt(),
            mala_accept=accept,
        )
        return new, info

    def step(self, state: SGLDState, batch: Any, noise: Params) -> tuple[SGLDState, SGLDInfo]:
        """One SGLD step; `noise` holds standard normals shaped like the params."""
        new, info = self.update(state.params, state.anchor, batch, noise)
        return SGLDState(new, state.anchor, state.step + 1), info


class RMSPropState(NamedTuple):
    """`SGLDState` plus the RMSProp running mean V of the squared gradient (one tensor per
    parameter, shaped like it)."""

    params: Params
    anchor: Params
    step: int
    square_avg: Params


@dataclass(frozen=True)
class RMSPropSGLD(SGLD):
    """RMSProp-preconditioned SGLD (Li, Chen, Carlson & Carin 2016, without their Γ
    correction term), as devinterp's `SGMCMC.rmsprop_sgld` (devinterp 1.3 / 2.x,
    src/devinterp/optim/preconditioner.py `RMSpropPreconditioner` and sgmcmc.py
    `SGMCMC.step`, github.com/timaeus-research/devinterp), the sampler Hitchcock &
    Hoogland 2025 (*From Global to Local: A Scalable Benchmark for Local Posterior
    Sampling*) found the most faithful locally. Per coordinate, every step:

        V ← α V + (1 − α) g²,          g = ∇L_m(w), the raw minibatch gradient (not nβ·g)
        G = 1 / (λ + √V),
        w ← w − (ε/2) G (nβ g + γ(w − w*) + δ w) + √(ε G) ξ,

    with V = 0 at the start and no bias correction (devinterp's `square_avg` starts at
    zeros and is updated before G is formed), and neither the Γ(w) = Σ_j ∂G_ij/∂w_j term
    (devinterp's `add_grad_correction` raises NotImplementedError) nor MALA. The prior terms
    (localization γ, weight decay δ) are preconditioned with the gradient, as devinterp's
    `prior_coef = G`. `alpha` = α (devinterp's default 0.99) and `stability` = λ
    (devinterp's `eps`, default 0.1 in both `RMSpropPreconditioner` and `rmsprop_sgld`).

    Since G ≤ 1/λ, the largest step any coordinate takes is that of SGLD at ε/λ; with V
    starting at 0 the first steps take it. α = 1 keeps V at 0: plain SGLD at ε/λ.

    Without Γ the chain is biased wherever G varies along it: its stationary law is
    ∝ exp(−U)/G in the limit of a V that follows w instantly (Fokker–Planck with diffusion
    G). On K = ½‖w‖² at nβ = 1000 with the defaults (√V ≈ 0.03 against λ = 0.1) λ̂ comes out
    10% high; with V averaged over far more steps than the chain's correlation time (α
    near 1) G is constant to first order and the bias goes (tests/unit/test_rmsprop_sgld.py).

    `update` takes and returns V (`chains.run_chains` carries it); everything else is
    `SGLD`'s.
    """

    alpha: float = 0.99
    stability: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mala:
            raise ValueError("mala=True is not supported with the RMSProp sampler")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if not self.stability > 0:
            raise ValueError(f"stability (λ) must be positive, got {self.stability}")

    def init(self, params: Params, anchor: Params | None = None) -> RMSPropState:
        """Start at `params` with V = 0, localized around `anchor` (default: the start)."""
        state = super().init(params, anchor)
        return RMSPropState(*state, tuple(torch.zeros_like(p) for p in state.params))

    def update(  # type: ignore[override]
        self, params: Params, anchor: Params, batch: Any, noise: Params, square_avg: Params
    ) -> tuple[Params, SGLDInfo, Params]:
        """New parameters, the step's diagnostics and the new V."""
        loss, grads = self.loss_and_grad(params, batch)
        drifts = self.drift(params, anchor, grads)
        new, avg = [], []
        for p, a, g, d, z, v, k in zip(
            params, anchor, grads, drifts, noise, square_avg, self.event_ndims, strict=True
        ):
            v = self.alpha * v + (1.0 - self.alpha) * (g * g)
            precond = 1.0 / (v.sqrt() + self.stability)
            eps = _per_model(self.step_size, k)
            q = p - precond * d + (eps * precond).sqrt() * z
            if self.bounding_box is not None:
                q = torch.minimum(torch.maximum(q, a - self.bounding_box), a + self.bounding_box)
            new.append(q)
            avg.append(v)
        delta = tuple(p - a for p, a in zip(params, anchor, strict=True))
        info = SGLDInfo(
            loss=loss,
            grad_norm=_sq_norm(grads, self.event_ndims).sqrt(),
            distance=_sq_norm(delta, self.event_ndims).sqrt(),
        )
        return tuple(new), info, tuple(avg)

    def step(  # type: ignore[override]
        self, state: RMSPropState, batch: Any, noise: Params
    ) -> tuple[RMSPropState, SGLDInfo]:
        """One RMSProp-SGLD step; `noise` holds standard normals shaped like the params."""
        new, info, avg = self.update(state.params, state.anchor, batch, noise, state.square_avg)
        return RMSPropState(new, state.anchor, state.step + 1, avg), info
