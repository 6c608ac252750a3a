"""Checks made after the run, where the chains went: is the loss there still the quadratic
of the minimum nearest to them (`curvature_ratio_at_ends`), and did a chain find lower loss than w*
(`lowest_loss_at_ends`)? Both go into `LLCResult.calibration`; `diagnostics` judges them."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from tms_slt.sampling import curvature
from tms_slt.sampling.chains import Traces
from tms_slt.sampling.problems import Problem

#: The chains are probed at this many kept positions per chain, spread over the draws.
RATIO_POSITIONS = 4
#: The curvature is probed at this many chains per anchor.
PROBED_CHAINS = 2


def curvature_ratio_at_ends(
    problem: Problem, curv: curvature.Curvature, traces: Traces, nbeta: Any
) -> Tensor:
    """`curvature.relaxed_ratio` over the last RATIO_POSITIONS kept positions of the first
    PROBED_CHAINS chains (folded into one dim: the median is over all of them): each
    position's Hessian against the Hessian at the minimum nearest to it where that minimum
    is on w*'s set of minima (`curvature.SAME_MINIMUM_NATS`, the same number of curved
    directions, symmetries projected out), against w*'s elsewhere; all on the same rows
    (`Curvature.rows`)."""
    positions = []
    for p, k in zip(traces.params, problem.event_ndims, strict=True):
        chain_dim = p.ndim - k - 2
        kept = p.narrow(chain_dim, 0, min(PROBED_CHAINS, p.shape[chain_dim]))
        kept = kept.narrow(
            chain_dim + 1,
            max(kept.shape[chain_dim + 1] - RATIO_POSITIONS, 0),
            min(RATIO_POSITIONS, kept.shape[chain_dim + 1]),
        )
        positions.append(kept.flatten(chain_dim, chain_dim + 1))
    finite = all(bool(torch.isfinite(e).all()) for e in positions)
    if curv.eigenvectors is None or not finite:
        return torch.full(curv.h_max.shape, math.nan, dtype=torch.float64)
    positions = tuple(positions)
    anchor = problem.anchor
    reference = curvature.hessian_at(problem, anchor, curv.rows).squeeze(-3)
    at_chains = curvature.hessian_at(problem, positions, curv.rows)
    nearest, loss = curvature.relaxed(problem, positions, at_chains, curv.null_threshold)
    at_nearest = curvature.hessian_at(problem, nearest, curv.rows)
    dtype = curvature._probe_dtype(problem)
    anchor_loss, _ = curvature.full_loss_and_gradient(
        problem, curvature._cast_params(anchor, dtype), dtype
    )
    nb = torch.as_tensor(nbeta, dtype=torch.float64)[..., None]
    level = nb * (loss.cpu() - anchor_loss.cpu()).abs() <= curvature.SAME_MINIMUM_NATS
    projected = curvature._without_symmetries(problem, nearest, at_nearest)
    rank = (torch.linalg.eigvalsh(projected) > curv.null_threshold[..., None, None]).sum(-1)
    on_anchor_set = level & (rank == curv.num_curved[..., None])
    return curvature.relaxed_ratio(curv, at_chains, reference, at_nearest, on_anchor_set)


#: `lowest_loss_at_ends` takes every row while chain ends × rows stay within this budget
#: (exact: the c = 8 k-gons' 28 ends on 10⁴ rows), else as many rows as fit, at least
#: LOWER_LOSS_ROWS (the quickstart's 1200 ends on 14 000 of its 30 000), in groups.
LOWER_LOSS_BUDGET = 2**24
LOWER_LOSS_ROWS = 4096
LOWER_LOSS_GROUPS = 16


def lowest_loss_at_ends(
    problem: Problem, traces: Traces, nbeta: Any, generator: torch.Generator
) -> Tensor:
    """(...) min over chains of nβ(L_n(w_end) − L_n(w*)) + 3 standard errors, w_end each
    chain's last kept position: at a minimum this is ≥ 0; clearly negative, the chains have
    found lower loss than w* (along a flat direction that ends in a descent, say: the 5−−−
    of c = 8) and λ̂ is pulled down by it, whatever the other checks say.

    The difference is taken row by row on every row, or on one random subset
    (`LOWER_LOSS_BUDGET`; the same rows at w_end and w*, so the loss's spread over rows
    cancels), and
    its standard error from LOWER_LOSS_GROUPS groups of those rows, with the finite-
    population factor √(1 − rows/n) (0 when every row is used). NaN where a chain's
    position is not finite."""
    ends = tuple(
        p.select(p.ndim - k - 1, -1)
        for p, k in zip(traces.params, problem.event_ndims, strict=True)
    )
    anchor = problem.anchor
    nb = torch.as_tensor(nbeta, dtype=torch.float64)[..., None]
    if problem.data_batch is None:  # a potential: K(w) exactly
        with torch.no_grad():
            diff = (problem.loss_fn(ends, None) - problem.loss_fn(anchor, None)).double().cpu()
        shift = nb * diff
        return torch.where(torch.isfinite(shift), shift, torch.nan).amin(-1)
    n = problem.n
    points = math.prod(ends[0].shape[: ends[0].ndim - problem.event_ndims[0]])
    size = min(n, max(LOWER_LOSS_ROWS, LOWER_LOSS_BUDGET // max(points, 1)))
    rows = torch.randperm(n, generator=generator, device=generator.device)[:size]
    groups = []
    with torch.no_grad():
        for part in rows.chunk(min(LOWER_LOSS_GROUPS, len(rows))):
            batch = problem.data_batch(part)
            diff = problem.loss_fn(ends, batch) - problem.loss_fn(anchor, batch)
            groups.append(diff.double().cpu())
    diffs = torch.stack(groups)  # (group, ..., chain)
    mean = diffs.mean(0)
    fpc = math.sqrt(max(0.0, 1.0 - len(rows) / n))
    se = diffs.std(0) / math.sqrt(diffs.shape[0]) * fpc if diffs.shape[0] > 1 else 0.0
    shift = nb * (mean + 3 * se)
    return torch.where(torch.isfinite(shift), shift, torch.nan).amin(-1)
