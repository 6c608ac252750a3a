"""`LLCResult` and `compute_llc`: the LLC estimate from stored SGLD loss traces.

λ̂(w*) = nβ (mean over post-burn-in draws of L_m(w_t) − L_n(w*)) per chain
(Lau et al. 2023, arXiv 2308.12108), with divergent chains flagged and excluded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    import arviz
    import xarray as xr


#: A chain is divergent when nβ(L_t − L_n(w*)) exceeds this many times its number
#: of parameters d (i.e. 200 × the largest possible LLC, d/2), or is not finite.
DIVERGENCE_FACTOR = 100.0


def default_nbeta(n: int) -> float:
    """nβ = n / log n, the inverse temperature β = 1/log n of Lau et al. 2023, times n."""
    if n < 2:
        raise ValueError(f"n / log n needs n >= 2 training samples, got {n}")
    return n / math.log(n)


@dataclass(frozen=True)
class LLCResult:
    """LLC estimates for every leading index (e.g. checkpoint, instance) and chain.

    Attributes:
        loss_trace: (..., chain, draw) minibatch loss along each chain.
        init_loss: (...) L_n(w*) at the anchor.
        nbeta: nβ used by the sampler: a float, or a tensor broadcastable to (...)
            (one nβ per leading index, e.g. per calibration setting).
        num_burnin: leading draws discarded from the estimate.
        dims: names of the leading dims of `init_loss`.
        coords: coordinate values for some of `dims`.
        num_params: d, parameters per chain (sets the divergence bound).
        divergence_bound: chains whose nβ(L_t − L_n(w*)) exceeds it are divergent.
        mala_accept: (..., chain, draw) MALA acceptance probabilities, or None.
        param_trace: thinned parameter draws, or None (the default: not recorded). One
            tensor per sampled parameter (for TMS: W, then b if it is sampled), each of
            shape (..., chain, kept_draw, *event); kept draw j holds w_{(j+1)k}, the
            parameters after (j + 1)·k SGLD steps, k = `keep_params_every` (so the loss
            of draw index (j + 1)·k of `loss_trace`, when recorded, is evaluated at it).
        keep_params_every: k, the thinning of `param_trace` (None when not recorded).
        thin: draw j of `loss_trace` (and `mala_accept`) is SGLD step j·thin; 1 unless
            `estimate_llc(thin=...)` thinned the traces.
        calibration: how the sampler was set and the evidence (empty when unknown, e.g.
            from stored traces): per anchor (...) the `step_size` ε and `localization` γ
            used, the Hessian's largest, softest-curved and smallest eigenvalues at w*
            (`hessian_max`, `hessian_soft`, `hessian_min`), `num_curved`, `newton_drop`
            (how much loss a Newton step would still remove from w*), `grad_norm`, the
            quadratic model's `predicted_bias_*` of λ̂ (`sampling.settings.predicted_bias`),
            and `mode` (which settings were automatic). See `estimate_llc`.
    """

    loss_trace: Tensor
    init_loss: Tensor
    nbeta: float | Tensor
    num_burnin: int
    dims: tuple[str, ...] = ()
    coords: dict[str, Any] = field(default_factory=dict)
    num_params: int | None = None
    divergence_bound: float | None = None
    mala_accept: Tensor | None = None
    param_trace: tuple[Tensor, ...] | None = None
    keep_params_every: int | None = None
    thin: int = 1
    calibration: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.thin, bool) or not isinstance(self.thin, int) or self.thin < 1:
            raise ValueError(f"thin must be a positive integer, got {self.thin!r}")
        if self.loss_trace.ndim < 2:
            raise ValueError("loss_trace must have shape (..., chain, draw)")
        if tuple(self.loss_trace.shape[:-2]) != tuple(self.init_loss.shape):
            raise ValueError(
                f"loss_trace leading shape {tuple(self.loss_trace.shape[:-2])} does not match "
                f"init_loss shape {tuple(self.init_loss.shape)}"
            )
        if not 0 <= self.num_burnin < self.loss_trace.shape[-1]:
            raise ValueError(
                f"num_burnin must be in [0, {self.loss_trace.shape[-1]}), got {self.num_burnin}"
            )
        if len(self.dims) != self.init_loss.ndim:
            raise ValueError(f"dims {self.dims} do not name the {self.init_loss.ndim} leading dims")
        if self.mala_accept is not None and self.mala_accept.shape != self.loss_trace.shape:
            raise ValueError("mala_accept must have the shape of loss_trace")
        if (self.param_trace is None) != (self.keep_params_every is None):
            raise ValueError("param_trace and keep_params_every go together")
        if self.param_trace is not None:
            lead = tuple(self.loss_trace.shape[:-1])
            # With a thinned loss trace the step count is known only to within `thin`.
            steps = self.num_draws * self.thin
            kept = {(s // self.keep_params_every,) for s in range(steps - self.thin + 1, steps + 1)}
            for p in self.param_trace:
                if (
                    tuple(p.shape[len(lead) : len(lead) + 1]) not in kept
                    or tuple(p.shape[: len(lead)]) != lead
                ):
                    raise ValueError(
                        f"param_trace tensors must have shape {lead} + (kept_draw,) + event "
                        f"shape with kept_draw in {sorted(k for (k,) in kept)}, "
                        f"got {tuple(p.shape)}"
                    )

    @cached_property
    def nbeta_per_index(self) -> Tensor:
        """nβ broadcast to the leading shape (...), float64."""
        nb = torch.as_tensor(self.nbeta, dtype=torch.float64)
        return torch.broadcast_to(nb, self.init_loss.shape)

    @cached_property
    def llc_trace(self) -> Tensor:
        """nβ (L_t − L_n(w*)), shape (..., chain, draw), in float64."""
        # In place on one float64 copy (the same operations, without two more temporaries).
        trace = self.loss_trace.to(torch.float64, copy=True)
        trace.sub_(self.init_loss.double()[..., None, None])
        return trace.mul_(self.nbeta_per_index[..., None, None])

    @cached_property
    def divergent(self) -> Tensor:
        """(..., chain) True where the chain's loss went non-finite or out of bounds."""
        # From each chain's extremes (amax/amin propagate NaN): no per-draw temporaries.
        high, low = self.llc_trace.amax(-1), self.llc_trace.amin(-1)
        bad = ~(torch.isfinite(high) & torch.isfinite(low))
        if self.divergence_bound is not None:
            bad |= high > self.divergence_bound
        return bad

    @cached_property
    def per_chain(self) -> Tensor:
        """(..., chain) λ̂ of each chain from its post-burn-in draws; NaN if divergent."""
        est = self.llc_trace[..., self.num_burnin :].mean(-1)
        return est.masked_fill(self.divergent, math.nan)

    @property
    def num_divergent(self) -> Tensor:
        """(...) number of divergent chains (excluded from `mean` and `std`)."""
        return self.divergent.sum(-1)

    @cached_property
    def mean(self) -> Tensor:
        """(...) mean λ̂ over non-divergent chains (NaN when every chain diverged)."""
        return self.per_chain.nanmean(-1)

    @cached_property
    def std(self) -> Tensor:
        """(...) standard deviation of λ̂ across non-divergent chains (ddof = 1)."""
        ok = ~self.divergent
        k = ok.sum(-1)
        dev = (self.per_chain - self.mean[..., None]).nan_to_num(0.0) ** 2
        return (dev.sum(-1) / (k - 1).clamp(min=1)).sqrt().masked_fill(k < 2, math.nan)

    @property
    def num_chains(self) -> int:
        return self.loss_trace.shape[-2]

    @property
    def num_draws(self) -> int:
        return self.loss_trace.shape[-1]

    @property
    def param_steps(self) -> Tensor | None:
        """(kept_draw,) SGLD steps taken before each kept parameter draw: k, 2k, …"""
        if self.keep_params_every is None:
            return None
        k = self.keep_params_every
        return torch.arange(1, self.num_draws // k + 1) * k

    @property
    def dataset(self) -> xr.Dataset:
        """The estimate as xarray, with devinterp 2.x's names: `llc_mean`, `llc_std`,
        `llc_per_chain`, `loss_trace` (…, chain, draw), `init_loss`, plus the diagnostics
        (`reliable`, `reasons`, R-hat, ESS, MCSE) and the settings used (`to_xarray`)."""
        ds = self.to_xarray()
        diag = self.diagnostics
        for name in ("reliable", "reasons", "rhat", "ess_bulk", "mcse", "standard_error"):
            ds[name] = diag[name]
        return ds

    @cached_property
    def diagnostics(self) -> xr.Dataset:
        """R-hat, ESS, MCSE of λ̂ and the reliability flags (see sampling.diagnostics)."""
        from tms_slt.sampling.diagnostics import llc_diagnostics

        return llc_diagnostics(self)

    def to_inference_data(self, *, max_draws: int | None = None) -> arviz.InferenceData:
        """Post-burn-in λ̂ draws as an ArviZ InferenceData (see sampling.diagnostics);
        `max_draws` thins them to at most that many per chain."""
        from tms_slt.sampling.diagnostics import to_inference_data

        return to_inference_data(self, max_draws=max_draws)

    def to_xarray(self) -> xr.Dataset:
        """Everything as one Dataset over the leading dims, `chain` and `draw`.

        Kept parameter draws, when recorded, are `param_{i}` over the leading dims,
        `chain`, `kept_draw` (coordinate: the SGLD step, `param_steps`) and
        `param_{i}_axis_{j}` for the event dims.
        """
        import xarray as xr

        lead = list(self.dims)
        coords = {d: np.asarray(v) for d, v in self.coords.items()}
        data = {
            "llc_mean": (lead, self.mean.numpy()),
            "llc_std": (lead, self.std.numpy()),
            "llc_per_chain": ([*lead, "chain"], self.per_chain.numpy()),
            "num_divergent": (lead, self.num_divergent.numpy()),
            "divergent": ([*lead, "chain"], self.divergent.numpy()),
            "init_loss": (lead, self.init_loss.double().numpy()),
            "loss_trace": ([*lead, "chain", "draw"], self.loss_trace.double().numpy()),
            "nbeta": (lead, self.nbeta_per_index.numpy()),
        }
        if self.mala_accept is not None:
            data["mala_accept"] = ([*lead, "chain", "draw"], self.mala_accept.double().numpy())
        if self.param_trace is not None:
            coords["kept_draw"] = self.param_steps.numpy()
            for i, p in enumerate(self.param_trace):
                event = [f"param_{i}_axis_{j}" for j in range(p.ndim - len(lead) - 2)]
                data[f"param_{i}"] = ([*lead, "chain", "kept_draw", *event], p.double().numpy())
        attrs: dict[str, Any] = {"num_burnin": self.num_burnin, "thin": self.thin}
        for name, value in self.calibration.items():
            if isinstance(value, Tensor):
                data[name] = (lead, torch.broadcast_to(value, self.init_loss.shape).numpy())
            else:
                attrs[f"calibration_{name}"] = value
        return xr.Dataset(data, coords=coords, attrs=attrs)


def compute_llc(
    loss_trace: Tensor,
    init_loss: Tensor,
    nbeta: float | Tensor,
    *,
    num_burnin: int,
    dims: Sequence[str] | None = None,
    coords: dict[str, Any] | None = None,
    num_params: int | None = None,
    mala_accept: Tensor | None = None,
    param_trace: tuple[Tensor, ...] | None = None,
    keep_params_every: int | None = None,
    thin: int = 1,
    calibration: dict[str, Any] | None = None,
) -> LLCResult:
    """λ̂ = nβ (mean of the post-burn-in losses − L_n(w*)) from stored traces.

    Args:
        loss_trace: (..., chain, draw) losses along SGLD chains.
        init_loss: (...) L_n(w*).
        nbeta: the nβ the chains were sampled at (it must match the sampler's); a
            float or a tensor broadcastable to (...).
        num_burnin: number of leading draws to discard.
        dims, coords: names and coordinates of the leading dims.
        num_params: parameters per chain d; enables the divergence bound
            nβ(L_t − L_n(w*)) > DIVERGENCE_FACTOR · d. Without it only non-finite
            losses mark a chain divergent.
        mala_accept: optional (..., chain, draw) MALA acceptance probabilities.
        param_trace, keep_params_every: optional thinned parameter draws, each
            (..., chain, kept_draw, *event), kept every `keep_params_every` steps.
        thin: the thinning the traces were stored with (draw j = step j·thin).
        calibration: the sampler's settings and their evidence (`LLCResult.calibration`).
    """
    nb = torch.as_tensor(nbeta)
    if not bool((nb > 0).all()):
        raise ValueError(f"nbeta must be positive, got {nbeta}")
    loss_trace = torch.as_tensor(loss_trace)
    init_loss = torch.as_tensor(init_loss)
    if dims is None:
        dims = tuple(f"dim_{i}" for i in range(init_loss.ndim))
    bound = DIVERGENCE_FACTOR * num_params if num_params else None
    return LLCResult(
        loss_trace=loss_trace,
        init_loss=init_loss,
        nbeta=float(nbeta) if not isinstance(nbeta, Tensor) else nbeta,
        num_burnin=num_burnin,
        dims=tuple(dims),
        coords=dict(coords or {}),
        num_params=num_params,
        divergence_bound=bound,
        mala_accept=mala_accept,
        param_trace=None if param_trace is None else tuple(param_trace),
        keep_params_every=keep_params_every,
        thin=thin,
        calibration=dict(calibration or {}),
    )
