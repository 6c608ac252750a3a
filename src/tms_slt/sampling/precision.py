"""Longer chains where λ̂ is too imprecise: continue the anchors that need it.

The automatic chain length (`settings.chain_length`) comes from the quadratic model's
slowest relaxation time; where the loss is anharmonic (the k-gons' soft directions, deep
linear networks) the λ̂ trace mixes more slowly than that model says and the estimate ends
imprecise. `extend_for_precision` measures each anchor's standard error after the run, as
`diagnostics` will (the larger of the MCSE and the chains' spread / √K), and continues the
chains of the anchors whose error exceeds TARGET_RELATIVE_ERROR, from their last state
(the same Markov chains, no new burn-in), to f times the post-burn-in draws,
f = ⌈f_now · (SE / (TARGET_RELATIVE_ERROR · |λ̂|))²⌉ ≤ MAX_EXTENSION (a standard error
falling as 1/√T), measuring again after each of at most MAX_ROUNDS rounds. The work added
is at most EXTENSION_BUDGET times the main run's.

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

import numpy as np
import torch
from torch import Tensor

from tms_slt.sampling import mcmc_stats
from tms_slt.sampling.backends import sample
from tms_slt.sampling.chains import Traces
from tms_slt.sampling.problems import Problem, select_anchors
from tms_slt.sampling.sgld import SGLD

#: λ̂'s standard error must be at most this fraction of |λ̂| for a reliable estimate
#: (`diagnostics`): two standard errors then stay within 10%.
MAX_RELATIVE_ERROR = 0.05
#: The error an extension aims at: below the bound, so that the bound's own noisy
#: estimate of the error (four chains' spread) still passes.
TARGET_RELATIVE_ERROR = 0.8 * MAX_RELATIVE_ERROR
#: At most this many times the post-burn-in draws per anchor, in at most MAX_ROUNDS rounds,
#: and at most EXTENSION_BUDGET times the main run's anchor-steps in all (one anchor may
#: always take the whole MAX_EXTENSION).
MAX_EXTENSION = 4
MAX_ROUNDS = 3
EXTENSION_BUDGET = 1.0
#: Only anchors whose chains sample where the curvature is w*'s within this factor are
#: lengthened: the band where λ̂ was within 8% on the k-gons (`curvature.MAX_CURVATURE_RATIO`
#: says so), narrower than the flag's 1.15. Between the two, λ̂ may carry a finite-nβ bias
#: (the c = 6 5+ at n = 10⁴: ratio 0.88, λ̂ 19% high): more draws would only make a biased
#: number look precise, so the precision flag stays.
MAX_RATIO_TO_EXTEND = 1.1


def standard_error(draws: Tensor) -> Tensor:
    """(...) λ̂'s standard error from its post-burn-in draws (..., chain, draw), as
    `diagnostics` takes it: the larger of ArviZ's MCSE of the mean and the chains' spread
    / √K; inf with fewer than two chains."""
    x = draws.double()
    chains = x.shape[-2]
    mcse = torch.from_numpy(np.asarray(mcmc_stats.mcse_mean(x.numpy()), dtype=np.float64))
    spread = x.mean(-1).std(-1) / math.sqrt(chains) if chains > 1 else torch.inf
    return torch.maximum(mcse.reshape(x.shape[:-2]), torch.as_tensor(spread).expand(x.shape[:-2]))


def needed_factors(estimate: Tensor, error: Tensor, current: Tensor) -> Tensor:
    """(...) the extension f each anchor needs, ⌈current · (error / (TARGET·|λ̂|))²⌉, capped
    at MAX_EXTENSION, where λ̂ > 0 and MAX_EXTENSION is enough to meet MAX_RELATIVE_ERROR
    (if not the target); else `current`."""
    need = current * (error / (TARGET_RELATIVE_ERROR * estimate.abs().clamp(min=1e-300))) ** 2
    need = need.nan_to_num(math.inf)
    enough = need * (TARGET_RELATIVE_ERROR / MAX_RELATIVE_ERROR) ** 2 <= MAX_EXTENSION
    f = torch.ceil(need.clamp(max=MAX_EXTENSION)).to(torch.int64)
    wanted = enough & (f > current) & (estimate > 0)
    return torch.where(wanted, f, current)


def within_budget(current: Tensor, wanted: Tensor, budget: float) -> Tensor:
    """`wanted` factors, the cheapest increases first, while Σ (f − current) ≤ budget; the
    rest keep `current`."""
    out = current.clone().reshape(-1)
    increase = (wanted - current).reshape(-1).double()
    spent = 0.0
    for i in torch.argsort(increase).tolist():
        cost = float(increase[i])
        if cost <= 0:
            continue
        if spent + cost > budget:
            break
        spent += cost
        out[i] = int(wanted.reshape(-1)[i])
    return out.view(current.shape)


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

    `eligible` (...) marks the anchors worth it (every check but precision passed). Anchors
    with a divergent chain (non-finite, or nβ(L − L*) above `divergence_bound`) are left
    alone, as are all but a problem's only anchor where its anchors cannot be split.
    """
    lead = problem.init_loss.shape
    factors = torch.ones(lead, dtype=torch.int64)
    if traces.last is None or kernel.mala:  # a continuation's MALA record is not kept
        return traces, factors
    flat_loss = traces.loss.reshape(-1, *traces.loss.shape[len(lead) :])
    post_draws = flat_loss.shape[-1] - num_burnin
    anchor_loss = problem.init_loss.reshape(-1).double()
    scale = nbeta_tensor(nbeta, lead).reshape(-1)
    rel = scale[:, None, None] * (flat_loss.double() - anchor_loss[:, None, None])
    ok = torch.isfinite(rel).all(-1).all(-1)
    if divergence_bound is not None:
        ok &= (rel <= divergence_bound).all(-1).all(-1)
    tails: dict[int, list[Tensor]] = {a: [] for a in range(len(anchor_loss))}
    last: dict[int, tuple[Tensor, ...] | None] = dict.fromkeys(tails)
    current = factors.reshape(-1).clone()
    candidates = eligible.reshape(-1) & ok
    budget = max(EXTENSION_BUDGET * len(current), MAX_EXTENSION - 1.0)
    for _ in range(MAX_ROUNDS):
        index = candidates.nonzero().squeeze(-1)
        if not len(index):
            break
        estimate, error = _precision(rel, tails, scale, anchor_loss, index, num_burnin)
        wanted = needed_factors(estimate, error, current[index])
        granted = within_budget(current[index], wanted, budget)
        budget -= float((granted - current[index]).sum())
        grown = granted > current[index]
        candidates[index[~grown]] = False
        if not bool(grown.any()):
            break
        by_increase: dict[int, list[int]] = {}
        for a, f in zip(index[grown].tolist(), granted[grown].tolist(), strict=True):
            by_increase.setdefault(f - int(current[a]), []).append(a)
        for increase, members in sorted(by_increase.items()):
            group = torch.tensor(members)
            more = _continue(
                problem, kernel, traces.last, last, group, increase * post_draws, generator, backend
            )
            if more is None:  # this problem's anchors cannot be split
                candidates[group] = False
                continue
            loss, states = more
            for j, a in enumerate(members):
                tails[a].append(loss[j])
                last[a] = tuple(s[j] for s in states)
                current[a] += increase
    new_loss = flat_loss.clone()
    for a in (current > 1).nonzero().squeeze(-1).tolist():
        f = int(current[a])
        new_loss[a] = _block_means(flat_loss[a], torch.cat(tails[a], dim=-1), num_burnin, f)
    return (
        traces._replace(loss=new_loss.view(traces.loss.shape)),
        current.view(lead),
    )


def _continue(
    problem: Problem,
    kernel: SGLD,
    first_last: tuple[Tensor, ...],
    last: dict,
    group: Tensor,
    draws: int,
    generator: torch.Generator,
    backend: str,
) -> tuple[Tensor, tuple[Tensor, ...]] | None:
    """`draws` more steps of the anchors `group` from where they are: (loss (k, chain,
    draws), last states (k, chain, *event) per parameter); None if they cannot be split."""
    lead = problem.init_loss.shape
    sub = select_anchors(problem, group)
    if sub is None:
        return None
    firsts = _state_subset(first_last, problem, group)  # (k, chain, *event)
    starts = tuple(
        torch.stack(
            [first[j] if last[a] is None else last[a][i] for j, a in enumerate(group.tolist())]
        )
        for i, first in enumerate(firsts)
    )
    if sub is problem:  # the only anchor: its own leading shape
        starts = tuple(s.reshape(p.shape) for s, p in zip(starts, problem.params, strict=True))
    sub_kernel = dataclasses.replace(
        kernel,
        step_size=_coefficient_subset(kernel.step_size, group, lead),
        nbeta=_coefficient_subset(kernel.nbeta, group, lead),
        localization=_coefficient_subset(kernel.localization, group, lead),
    )
    more = sample(sub, sub_kernel, draws, generator, backend=backend, start=starts)
    k, sub_lead = len(group), len(sub.init_loss.shape)
    loss = more.loss.reshape(k, *more.loss.shape[-2:])
    return loss, tuple(s.reshape(k, *s.shape[sub_lead:]) for s in more.last)


def _precision(
    rel: Tensor,
    tails: dict[int, list[Tensor]],
    scale: Tensor,
    anchor_loss: Tensor,
    index: Tensor,
    num_burnin: int,
) -> tuple[Tensor, Tensor]:
    """(λ̂, standard error) of the anchors `index` over all their post-burn-in draws so far
    (`rel`, (anchor, chain, draw) λ̂ draws of the main run, then each anchor's `tails`)."""
    if all(not tails[int(a)] for a in index):  # nothing continued yet: one batched pass
        x = rel[index, :, num_burnin:]
        return x.mean((-1, -2)), standard_error(x)
    estimates, errors = [], []
    for a in index.tolist():
        more = [scale[a] * (t.double() - anchor_loss[a]) for t in tails[a]]
        x = torch.cat([rel[a, :, num_burnin:], *more], dim=-1)
        estimates.append(x.mean())
        errors.append(standard_error(x[None])[0])
    return torch.stack(estimates), torch.stack(errors)


def nbeta_tensor(nbeta: Any, lead: torch.Size) -> Tensor:
    """nβ as a float64 tensor of the anchors' shape (...)."""
    return torch.as_tensor(nbeta, dtype=torch.float64).expand(lead)
