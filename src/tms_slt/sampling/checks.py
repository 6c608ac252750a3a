"""Checks made after the run, where the chains went: is the loss there still the quadratic
of w* (`curvature_ratio_at_ends`), and did a chain find lower loss than w*
(`lowest_loss_at_ends`)? Both go into `LLCResult.calibration`; `diagnostics` judges them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tms_slt.sampling import curvature
from tms_slt.sampling.chains import Traces
from tms_slt.sampling.problems import Problem

#: The chains are probed at this many kept positions per chain, spread over the draws.
RATIO_POSITIONS = 4
#: The curvature is probed at this many chains per anchor.
PROBED_CHAINS = 2


def curvature_ratio_at_ends(problem: Problem, curv: curvature.Curvature, traces: Traces) -> Tensor:
    """`curvature.curvature_ratio` over the last RATIO_POSITIONS kept positions of the first
    PROBED_CHAINS chains (folded into one dim: the median is over all of them), the
    chains' and the anchor's Hessians on the same rows (`Curvature.rows`)."""
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
    anchor = problem.anchor
    reference = curvature.hessian_at(problem, anchor, curv.rows).squeeze(-3)
    chains = curvature.hessian_at(problem, tuple(positions), curv.rows)
    return curvature.curvature_ratio(curv, chains, reference)


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


#: Along every null direction of the Hessian at w* (other than the known symmetries'), the
#: loss must rise by at least this much, nβ·ΔL, within the spread the chains reach by free
#: diffusion (`null_confinement`), for those directions to count as explored: the chains
#: are then held by the loss along them, not by the run's length.
MIN_NULL_CONFINEMENT = 1.0


def null_confinement(
    problem: Problem,
    curv: curvature.Curvature,
    step_size: Any,
    localization: Any,
    num_steps: int,
    nbeta: Any,
    generator: torch.Generator,
) -> Tensor:
    """(...) min over the Hessian's null eigenvectors v at w* (outside the span of
    `Problem.symmetry_tangents`) of nβ·(½(L_n(w* + r v) + L_n(w* − r v)) − L_n(w*)), with
    r² = (1 − e^{−εγT})/γ the variance one coordinate reaches in T SGLD steps of size ε
    where the loss is flat and only the localization γ holds it (an Ornstein–Uhlenbeck
    process started at w*; εT when γ = 0).

    At least MIN_NULL_CONFINEMENT: along each such direction the loss confines the chains
    within their reach, so a longer chain samples the same region. Below it the loss along
    some direction is still flat where the chains could have gone: their spread there is
    set by T, and so is λ̂'s share from it (the deep linear networks, whose λ exceeds half
    the Hessian's rank, come out low by as much as a third). +inf where no such direction
    exists, NaN without eigenvectors (the Lanczos spectrum of a large model).

    Losses are differences on the same rows: every row while points × rows stay within
    LOWER_LOSS_BUDGET, else LOWER_LOSS_ROWS rows drawn from `generator`."""
    shape = curv.h_max.shape
    if curv.eigenvectors is None:
        return torch.full(shape, math.nan, dtype=torch.float64)
    directions = _null_directions(problem, curv)  # (..., z, d), zero rows where padded
    z = directions.shape[-2]
    if z == 0:
        return torch.full(shape, math.inf, dtype=torch.float64)
    eps = torch.as_tensor(step_size, dtype=torch.float64).expand(shape)
    gam = torch.as_tensor(localization, dtype=torch.float64).expand(shape)
    spread = torch.where(
        gam > 0, -torch.expm1(-eps * gam * num_steps) / gam.clamp(min=1e-300), eps * num_steps
    )
    steps = spread.sqrt()[..., None, None] * torch.cat([directions, -directions], dim=-2)
    dtype = curvature._probe_dtype(problem)
    anchor = curvature._cast_params(problem.anchor, dtype)
    points = _displaced(anchor, problem.event_ndims, steps)
    rise = _mean_loss_shift(problem, points, anchor, generator)  # (..., 2z)
    rise = 0.5 * (rise[..., :z] + rise[..., z:])
    real = directions.norm(dim=-1) > 0
    nb = torch.as_tensor(nbeta, dtype=torch.float64)[..., None]
    held = torch.where(real, nb * rise, torch.inf).amin(-1)
    return torch.where(torch.isnan(rise).any(-1), torch.nan, held)


def _null_directions(problem: Problem, curv: curvature.Curvature) -> Tensor:
    """(..., z, d) an orthonormal basis of the null eigenvectors at w* less the symmetry
    tangents' span, padded with zero rows to the largest z over anchors."""
    V = curv.eigenvectors  # (..., d, d) columns
    null = curv.eigenvalues <= curv.null_threshold[..., None]
    lead, d = V.shape[:-2], V.shape[-1]
    tangents = None
    if problem.symmetry_tangents is not None:
        at = curvature._cast_params(problem.anchor, torch.float64)
        tangents = problem.symmetry_tangents(at).double().cpu().reshape(*lead, -1, d)
    bases = []
    for i in range(math.prod(lead)):
        index = np.unravel_index(i, lead) if lead else ()
        basis = V[index][:, null[index]]  # (d, z_i)
        if tangents is not None and basis.shape[1] and tangents.shape[-2]:
            T = tangents[index].T  # (d, s)
            U, S, _ = torch.linalg.svd(T, full_matrices=False)
            U = U[:, S > 1e-8 * S.amax().clamp(min=1e-300)]
            off, S2, _ = torch.linalg.svd(basis - U @ (U.T @ basis), full_matrices=False)
            basis = off[:, S2 > 0.5]  # the tangents lie in the null space: their part is ~0
        bases.append(basis.T)
    z = max(b.shape[0] for b in bases)
    out = torch.zeros(len(bases), z, d, dtype=torch.float64)
    for i, b in enumerate(bases):
        out[i, : b.shape[0]] = b
    return out.reshape(*lead, z, d)


def _displaced(anchor: tuple[Tensor, ...], event_ndims: tuple[int, ...], steps: Tensor) -> tuple:
    """w* + step for each of the P steps (..., P, d): params (..., P, *event)."""
    out, start = [], 0
    for a, k in zip(anchor, event_ndims, strict=True):
        event = a.shape[a.ndim - k :]
        size = math.prod(event)
        part = steps[..., start : start + size].to(a.dtype).to(a.device)
        out.append(a + part.reshape(*part.shape[:-1], *event))
        start += size
    return tuple(out)


def _mean_loss_shift(
    problem: Problem,
    points: tuple[Tensor, ...],
    anchor: tuple[Tensor, ...],
    generator: torch.Generator,
) -> Tensor:
    """(..., P) L_n(point) − L_n(w*) on the same rows (see `null_confinement`)."""
    with torch.no_grad():
        if problem.data_batch is None:  # a potential: K(w) exactly
            return (problem.loss_fn(points, None) - problem.loss_fn(anchor, None)).double().cpu()
        n = problem.n
        count = math.prod(points[0].shape[: points[0].ndim - problem.event_ndims[0]])
        size = min(n, max(LOWER_LOSS_ROWS, LOWER_LOSS_BUDGET // max(count, 1)))
        rows = (
            None
            if size == n
            else torch.randperm(n, generator=generator, device=generator.device)[:size]
        )
        batch = curvature._cast_batch(problem.data_batch(rows), points[0].dtype)
        return (problem.loss_fn(points, batch) - problem.loss_fn(anchor, batch)).double().cpu()
