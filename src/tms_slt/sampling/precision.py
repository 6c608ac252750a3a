"""Longer chains where λ̂ is too imprecise: continue the anchors that need it.

The automatic chain length (`settings.chain_length`) comes from the quadratic model's
slowest relaxation time; where the loss is anharmonic (the k-gons' soft directions, deep
linear networks) the λ̂ trace mixes more slowly than that model says and the estimate ends
imprecise. `extend_for_precision` measures each anchor's standard error after the run and
continues the chains of the anchors whose error exceeds TARGET_RELATIVE_ERROR, from their
last state (the same Markov chains, no new burn-in), by f − 1 times the post-burn-in length,
f = ⌈(SE / (TARGET_RELATIVE_ERROR · |λ̂|))²⌉ ≤ MAX_EXTENSION, the draws a standard error
falling as 1/√T needs. The work added is at most EXTENSION_BUDGET times the main run's.

An extended anchor's post-burn-in draws are stored as the means of f consecutive draws,
so every anchor keeps the same trace length: λ̂ (their mean) is the mean of all f·T draws,
and R-hat, ESS (in blocks) and the MCSE from the block means remain valid (batch means,
Flegal & Jones 2010, "Batch means and spectral variance estimators in MCMC", Ann. Stat.).
`LLCResult.calibration["extension"]` holds f per anchor (1: not extended).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from tms_slt.sampling.backends import sample
from tms_slt.sampling.chains import Traces
from tms_slt.sampling.problems import Problem, select_anchors
from tms_slt.sampling.sgld import SGLD

#: λ̂'s standard error must be at most this fraction of |λ̂| for a reliable estimate
#: (`diagnostics`): two standard errors then stay within 10%.
MAX_RELATIVE_ERROR = 0.05
#: The error an extension aims at: below the bound, so that the bound's own noisy
#: estimate of the error still passes.
TARGET_RELATIVE_ERROR = 0.8 * MAX_RELATIVE_ERROR
#: At most this many times the post-burn-in draws per anchor, and at most this much extra
#: work (anchor-steps) in all, as a multiple of the main run's (one anchor may always
#: take the whole MAX_EXTENSION).
MAX_EXTENSION = 4
EXTENSION_BUDGET = 1.0  # × the main run's anchor-steps
#: Batches per chain of the batch-means standard error used to decide.
NUM_BATCHES = 16


def standard_error(loss: Tensor, num_burnin: int, nbeta: Any, ok: Tensor) -> Tensor:
    """(...) λ̂'s standard error from the post-burn-in loss draws (..., chain, draw): the
    larger of the chains' spread / √K and the batch-means error (NUM_BATCHES per chain),
    over the chains marked `ok` (..., chain); inf where fewer than two are."""
    post = loss[..., num_burnin:].double()
    usable = (post.shape[-1] // NUM_BATCHES) * NUM_BATCHES
    batches = post[..., :usable].unflatten(-1, (NUM_BATCHES, -1)).mean(-1)  # (..., K, B)
    nb = torch.as_tensor(nbeta, dtype=torch.float64)
    k = ok.sum(-1)
    chain_means = torch.where(ok, post.mean(-1), 0.0)
    grand = chain_means.sum(-1) / k.clamp(min=1)
    spread = torch.where(ok, (post.mean(-1) - grand[..., None]) ** 2, 0.0).sum(-1)
    spread_se = (spread / (k - 1).clamp(min=1)).sqrt() / k.clamp(min=1).sqrt()
    dev = torch.where(ok[..., None], (batches - grand[..., None, None]) ** 2, 0.0)
    batch_se = (dev.sum((-1, -2)) / (k * NUM_BATCHES - 1).clamp(min=1)).sqrt()
    batch_se = batch_se / (k * NUM_BATCHES).clamp(min=1).sqrt()
    se = nb * torch.maximum(spread_se, batch_se)
    return torch.where(k >= 2, se, torch.full_like(se, math.inf))


def extension_factors(estimate: Tensor, error: Tensor, eligible: Tensor, budget: float) -> Tensor:
    """(...) f per anchor: ⌈(error / (TARGET_RELATIVE_ERROR·|λ̂|))²⌉ where that is 2 to
    MAX_EXTENSION and the anchor is `eligible`, else 1; the anchors needing the least go
    first while the extra draws, Σ (f − 1) in units of one anchor's run, fit `budget`."""
    need = (error / (TARGET_RELATIVE_ERROR * estimate.abs().clamp(min=1e-300))) ** 2
    f = torch.ceil(need.nan_to_num(math.inf)).clamp(max=MAX_EXTENSION + 1)
    wanted = eligible & (f >= 2) & (f <= MAX_EXTENSION) & (estimate > 0)
    factors = torch.ones_like(estimate, dtype=torch.int64)
    flat_f = torch.where(wanted, f, math.inf).reshape(-1)
    order = torch.argsort(flat_f)
    spent = 0.0
    for i in order.tolist():
        if not math.isfinite(float(flat_f[i])):
            break
        cost = float(flat_f[i]) - 1.0
        if spent + cost > budget:
            break
        spent += cost
        factors.view(-1)[i] = int(flat_f[i])
    return factors


def _coefficient_subset(value: Any, index: Tensor, lead: torch.Size) -> Any:
    """A per-anchor (..., 1) coefficient restricted to `index`: (k, 1); a float as it is."""
    if isinstance(value, Tensor) and value.ndim:
        return value.expand(*lead, 1).reshape(-1, 1).index_select(0, index)
    return value


def _state_subset(state: tuple[Tensor, ...], problem: Problem, index: Tensor) -> tuple:
    """Chain states (..., chain, *event) restricted to the anchors `index`: (k, chain, ...)."""
    lead = problem.init_loss.shape
    return tuple(p.reshape(-1, *p.shape[len(lead) :]).index_select(0, index) for p in state)


def _block_means(head: Tensor, tail: Tensor, num_burnin: int, factor: int) -> Tensor:
    """(k, chain, draws): the burn-in of `head`, then the means of `factor` consecutive
    draws of its post-burn-in part followed by `tail`."""
    post = torch.cat([head[..., num_burnin:], tail], dim=-1)
    blocks = post.unflatten(-1, (-1, factor)).mean(-1)
    return torch.cat([head[..., :num_burnin], blocks.to(head.dtype)], dim=-1)


def extend_for_precision(
    problem: Problem,
    kernel: SGLD,
    traces: Traces,
    num_burnin: int,
    nbeta: Any,
    eligible: Tensor,
    generator: torch.Generator,
    *,
    backend: str = "auto",
    divergence_bound: float | None = None,
) -> tuple[Traces, Tensor]:
    """Continue the chains of the anchors whose λ̂ is too imprecise (module doc); returns
    the traces with those anchors' post-burn-in draws as block means, and f per anchor.

    `eligible` (...) marks the anchors worth it (every check but precision passed). Anchors with a
    divergent chain (non-finite, or nβ(L − L*) above `divergence_bound`) are left alone,
    as are problems whose anchors cannot be split when only some need it.
    """
    lead = problem.init_loss.shape
    ones = torch.ones(lead, dtype=torch.int64)
    if traces.last is None:
        return traces, ones
    loss = traces.loss
    rel = nbeta_tensor(nbeta, lead)[..., None, None] * (loss - problem.init_loss[..., None, None])
    ok = torch.isfinite(rel).all(-1)
    if divergence_bound is not None:
        ok &= (rel <= divergence_bound).all(-1)
    post = loss[..., num_burnin:].double().mean((-1, -2))
    estimate = nbeta_tensor(nbeta, lead) * (post - problem.init_loss.double())
    error = standard_error(loss, num_burnin, nbeta_tensor(nbeta, lead), ok)
    budget = max(EXTENSION_BUDGET * estimate.numel(), MAX_EXTENSION - 1.0)
    factors = extension_factors(estimate, error, eligible & ok.all(-1), budget)
    if bool((factors == 1).all()):
        return traces, factors
    post_draws = loss.shape[-1] - num_burnin
    new_loss = loss.reshape(-1, *loss.shape[len(lead) :]).clone()
    new_accept = None
    if traces.mala_accept is not None:
        new_accept = traces.mala_accept.reshape(-1, *loss.shape[len(lead) :]).clone()
    flat = factors.reshape(-1)
    for f in sorted({int(v) for v in flat.tolist()} - {1}):
        index = (flat == f).nonzero().squeeze(-1)
        sub = select_anchors(problem, index)
        if sub is None:  # this problem cannot be split: leave the estimate as it is
            flat[index] = 1
            continue
        sub_kernel = dataclasses.replace(
            kernel,
            step_size=_coefficient_subset(kernel.step_size, index, lead),
            nbeta=_coefficient_subset(kernel.nbeta, index, lead),
            localization=_coefficient_subset(kernel.localization, index, lead),
        )
        start = traces.last if sub is problem else _state_subset(traces.last, problem, index)
        draws = (f - 1) * post_draws
        more = sample(sub, sub_kernel, draws, generator, backend=backend, start=start)
        k = len(index)
        head = new_loss.index_select(0, index)
        tail = more.loss.reshape(k, *more.loss.shape[-2:])
        new_loss[index] = _block_means(head, tail, num_burnin, f)
        if new_accept is not None and more.mala_accept is not None:
            tail = more.mala_accept.reshape(k, *more.loss.shape[-2:])
            new_accept[index] = _block_means(new_accept.index_select(0, index), tail, num_burnin, f)
    shape = loss.shape
    return (
        traces._replace(
            loss=new_loss.view(shape),
            mala_accept=None if new_accept is None else new_accept.view(shape),
        ),
        factors,
    )


def nbeta_tensor(nbeta: Any, lead: torch.Size) -> Tensor:
    """nβ as a float64 tensor of the anchors' shape (...)."""
    return torch.as_tensor(nbeta, dtype=torch.float64).expand(lead)
