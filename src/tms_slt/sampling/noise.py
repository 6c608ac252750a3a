"""The minibatch gradient's noise and what it does to λ̂.

SGLD steps with ∇L_m, the gradient of a minibatch of m rows, not ∇L_n. Its noise adds
(ε nβ/2)² Var(v_iᵀ∇L_m) to the injected variance ε in direction i every step, inflating the
chain's variance there, and λ̂, by κ_i = ε nβ² Var(v_iᵀ∇L_m)/4 (Welling & Teh 2011, §4; Lau
et al. 2023 name the bias). `gradient_noise` measures s̄ = mean over the curved directions of
Var(v_iᵀ∇L_m) where the chains are; `noise_record` turns it into κ̄, less what the settings
took out of the injected noise (`settings.noise_corrected`), and the batch size that would
make it small.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from tms_slt.sampling.chains import Traces
from tms_slt.sampling.curvature import Curvature, _flatten
from tms_slt.sampling.problems import Problem

#: The automatic ε is at most 4·C_NOISE / (nβ² s̄) (`settings.auto_settings`; s̄ =
#: `Curvature.gradient_noise`): the noise would inflate the curved directions' variance, and
#: λ̂, by κ ≤ C_NOISE, unless that ε would need more than MAX_DRAWS steps. The automatic
#: settings take κ out of the injected noise (`settings.noise_corrected`), up to
#: MAX_NOISE_CORRECTION; what is left, or
#: what s̄ at the chains' own positions says was missed, is flagged with the batch size that
#: would do (`noise_record`).
C_NOISE = 0.1
MAX_NOISE_CORRECTION = 0.25

#: Pairs of minibatch gradients drawn per chain to measure their variance
#: (`gradient_noise`): with 4 chains the relative error of the variance is about
#: √(2/(4·32)), 12.5%.
NOISE_PAIRS = 32
#: ... of which the first NOISE_PAIRS_FIRST decide whether the rest are needed: not where the
#: noise's bias κ is below NEGLIGIBLE_NOISE even at twice the first estimate.
NOISE_PAIRS_FIRST = 4
NEGLIGIBLE_NOISE = 0.005


def gradient_noise(
    problem: Problem,
    curv: Curvature,
    generator: torch.Generator,
    params: tuple[Tensor, ...] | None = None,
    pairs: int = NOISE_PAIRS,
    bias_per_unit: Tensor | None = None,
) -> Tensor:
    """(...) s̄ = mean over the curved directions v_i of Var(v_iᵀ ∇L_m(w)), the variance of
    the sampler's own minibatch gradient (its batch size, its row sampling), averaged over
    the positions w in `params` (each (..., chain, *event), one position per chain; default
    the anchor).

    SGLD with a noisy gradient adds (ε nβ/2)² Var(v_iᵀ∇L_m) to the injected variance ε in
    direction i per step, so the chain's variance there, and the direction's share of λ̂, is
    inflated by the factor 1 + ε nβ² Var(v_iᵀ∇L_m)/4 (Welling & Teh 2011, §4; Lau et al.
    2023 name the bias). The variance is measured where the chains are, not only at w*: it
    grows away from w* (in linear regression by ∝ ‖w − w*‖²/m, which at d = 200 outweighs
    the noise at w* ninefold). Two independent minibatches at the same position differ by
    twice the variance: Var = ½ E[(v_iᵀ(∇L_m − ∇L_m'))²], `pairs` pairs per chain, drawn
    from `generator`. Without eigenvectors (Lanczos) the variance is averaged over all d.

    With `bias_per_unit` (...), the bias κ per unit of s̄ at the largest ε the settings may
    use, the draws stop after the first NOISE_PAIRS_FIRST pairs where even twice the
    estimate gives κ below NEGLIGIBLE_NOISE everywhere (the TMS losses of the quickstart).
    """
    at = problem.params if params is None else params
    diffs: list[Tensor] = []
    for i in range(pairs):
        _, one = problem.loss_and_grad(at, problem.sample_batch(generator))
        _, two = problem.loss_and_grad(at, problem.sample_batch(generator))
        diff = tuple((a - b).detach() for a, b in zip(one, two, strict=True))
        diffs.append(_flatten(diff, problem.event_ndims).double().cpu())
        if i + 1 == NOISE_PAIRS_FIRST and bias_per_unit is not None and i + 1 < pairs:
            first = _curved_variance(curv, torch.cat(diffs, dim=-2))
            if bool((2 * bias_per_unit * first < NEGLIGIBLE_NOISE).all()):
                return first
    return _curved_variance(curv, torch.cat(diffs, dim=-2))


def _curved_variance(curv: Curvature, g: Tensor) -> Tensor:
    """½ mean over draws of (v_iᵀ g)², averaged over the curved v_i; g (..., draws, d)
    holds differences of two minibatch gradients."""
    if curv.eigenvectors is None:
        return 0.5 * (g**2).mean(-2).mean(-1)
    var = 0.5 * ((g @ curv.eigenvectors) ** 2).mean(-2)  # (..., d)
    curved = curv.eigenvalues > curv.null_threshold[..., None]
    mean = torch.where(curved, var, torch.zeros_like(var)).sum(-1) / curved.sum(-1).clamp(min=1)
    return torch.where(curved.any(-1), mean, var.mean(-1))


def noise_record(
    curv: Curvature,
    nbeta: Any,
    step_size: Any,
    batch_size: int | None,
    correction: Tensor | float = 0.0,
) -> dict[str, Tensor]:
    """The minibatch noise s̄ (`gradient_noise`) and its predicted bias of λ̂,
    κ = ε nβ² s̄/4 (`predicted_bias`), less the `correction` taken out of the injected noise
    (`noise_corrected`). With the batch size m, the smallest m at which κ would be C_NOISE
    without correction (the noise variance falls as 1/m): "batch_size_needed"."""
    if curv.gradient_noise is None:
        return {}
    nb = torch.as_tensor(nbeta, dtype=torch.float64)
    kappa = torch.as_tensor(step_size, dtype=torch.float64) * nb**2 * curv.gradient_noise / 4
    kappa = torch.where(curv.num_curved > 0, kappa, torch.zeros_like(kappa))
    out = {
        "gradient_noise": curv.gradient_noise,
        "predicted_bias_noise": kappa - torch.as_tensor(correction, dtype=torch.float64),
    }
    if batch_size is not None:
        needed = torch.ceil(batch_size * kappa / C_NOISE).clamp(min=batch_size)
        out["batch_size_needed"] = needed.to(torch.int64)
    return out


def noise_where_chains_went(
    problem: Problem,
    curv: Curvature,
    traces: Traces,
    generator: torch.Generator,
    bias_per_unit: Tensor,
    positions: int,
) -> Curvature:
    """`curv` with s̄ measured again at the chains' last `positions` kept positions (spread
    over the run) and averaged over them: the noise the chains met where the
    posterior is, after burn-in, rather than where a short pilot had reached. Positions of
    a diverged chain are left out (the anchor's s̄ stays where none is finite)."""
    if curv.gradient_noise is None or traces.params is None:
        return curv
    kept = traces.params[0].shape[traces.params[0].ndim - problem.event_ndims[0] - 1]
    measured = []
    for j in range(max(kept - positions, 0), kept):
        at = tuple(
            p.select(p.ndim - k - 1, j)
            for p, k in zip(traces.params, problem.event_ndims, strict=True)
        )
        if all(bool(torch.isfinite(a).all()) for a in at):
            pairs = NOISE_PAIRS // 2
            measured.append(gradient_noise(problem, curv, generator, at, pairs, bias_per_unit))
    if not measured:
        return curv
    return dataclasses.replace(curv, gradient_noise=torch.stack(measured).mean(0))
