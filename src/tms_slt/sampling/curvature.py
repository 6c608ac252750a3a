"""The curvature of L_n at the anchor, and what it implies for the SGLD settings.

A localized, tempered SGLD chain at a minimum w* samples, to second order,
exp(−½ Σ_i (k_i + γ) v_i²) along the Hessian's eigenvectors v_i, with k_i = nβ h_i
(h_i the eigenvalues of ∇²L_n(w*)). Three biases of λ̂ = nβ(E[L_n] − L_n(w*)) follow
from this quadratic model (Lau et al. 2023, arXiv 2308.12108, §4 and appendix):

* localization: direction i contributes ½ k_i / (k_i + γ) instead of ½, so γ must be
  small against the *softest* curved direction, nβ·h_soft;
* discretization: the Euler–Maruyama chain's variance is 1/((k+γ)(1 − ε(k+γ)/4)), so
  ε(k+γ) must be small in the *stiffest* direction, nβ·h_max;
* burn-in: the variance of direction i relaxes as 1 − exp(−ε(k_i + γ) t), so the burn-in
  must cover a few times 1/(ε(nβ h_soft + γ)) steps.

`probe` measures the spectrum at every anchor (one batched autograd graph: the exact
Hessian for d ≤ `FULL_HESSIAN_MAX_PARAMS`, a Lanczos estimate of its extremes above), and
says how far w* is from a minimum (`newton_shift`, `is_saddle`) and whether the chains
sample where the loss is still quadratic (`relaxed_ratio`: against the minimum nearest to
them, `relaxed`, or against w*, `curvature_ratio`). `sampling.settings` turns the
spectrum into ε, γ (`auto_settings`) and a chain length (`chain_length`), and evaluates
the quadratic model's biases for any settings (`predicted_bias`). Directions with h ≈ 0
(symmetries, the flat set of a Morse–Bott minimum, singular directions) are excluded from
h_soft: a flat direction adds nothing to λ̂ whatever γ is, and the curvature of a singular
direction at the posterior's scale is measured by probing again at the end of a pilot run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tms_slt.sampling.problems import Problem

#: The Hessian at the anchors is taken on every row of the training set: on a random subset
#: the null directions of a minimum get eigenvalues of ±1/√rows of the typical curvature,
#: and a minimum reads as a saddle. Probes away from the anchors (the pilots' and the
#: chains' positions) use one random subset of this many rows, drawn once per estimate, and
#: compare with the anchor's Hessian on those same rows.
HESSIAN_ROWS = 1024
#: Points × rows in one graph of the exact Hessian (`_hessian` chunks beyond it).
HESSIAN_CHUNK = 2**18
#: Rows per chunk when the Hessian is summed over the training set.
HESSIAN_ROW_CHUNK = 4096
#: Up to this many parameters the Hessian is computed exactly (d backward passes).
FULL_HESSIAN_MAX_PARAMS = 256
#: Lanczos steps for larger models.
LANCZOS_STEPS = 64
#: Eigenvalues below this fraction of the largest count as null (flat or singular). Low
#: enough to keep every curved direction of the k-gon minima (the softest, the 8-gon's, is at
#: 2.4e-3; 5e-3 dropped it), high enough that the singular directions of fitted deep linear
#: networks and reduced-rank regressions (≤ 1e-4 of the largest in the benchmark's models)
#: stay null. The symmetry directions, whose curvature at a point off a minimum is of either
#: size, are projected out first (`_without_symmetries`).
NULL_FRACTION = 1e-3
#: Points × rows per chunk when the gradient is taken over the whole training set (the
#: forward pass of 4000 anchors on 8192 rows at once took gigabytes).
GRADIENT_CHUNK = 2**16


@dataclass(frozen=True)
class Curvature:
    """The Hessian spectrum and gradient of L_n at each anchor (leading shape `...`).

    eigenvalues: (..., d') ascending (d' = d for the exact Hessian, else Lanczos Ritz values).
    grad_norm: (...) ‖∇L_n(w*)‖ over the whole training set (0 for a potential at w* = 0).
    newton_drop: (...) ½ gᵀ H⁺ g over the directions with h > null threshold: the loss a
        Newton step would still remove, i.e. how far w* is from the minimum of its basin.
    pilot_h_max: (...) the largest eigenvalue seen at a pilot's chain positions, or None.
    eigenvectors: (..., d, d) the exact Hessian's eigenvectors (columns), or None (Lanczos).
    rows: the row subset every probe away from the anchor uses (`probe_rows`; None: all).
    gradient_noise: (...) s̄, the minibatch gradient's variance along the curved directions,
        averaged over them (`gradient_noise`), where the chains are: at w* and the pilots'
        ends before the run, at the chains' kept positions after it; None where not measured.
    """

    eigenvalues: Tensor
    grad_norm: Tensor
    newton_drop: Tensor
    pilot_h_max: Tensor | None = None
    eigenvectors: Tensor | None = None
    rows: Tensor | None = None
    gradient_noise: Tensor | None = None

    @property
    def h_max(self) -> Tensor:
        """(...) the largest Hessian eigenvalue at w*, or where a pilot's chains went if
        larger (0 where the Hessian vanishes)."""
        top = self.eigenvalues[..., -1].clamp(min=0.0)
        return top if self.pilot_h_max is None else torch.maximum(top, self.pilot_h_max)

    @property
    def null_threshold(self) -> Tensor:
        return NULL_FRACTION * self.h_max

    @property
    def h_soft(self) -> Tensor:
        """(...) the smallest eigenvalue above the null threshold (h_max if none)."""
        ev = self.eigenvalues
        curved = ev > self.null_threshold[..., None]
        return (
            torch.where(curved, ev, torch.full_like(ev, math.inf)).amin(-1).nan_to_num(posinf=0.0)
        )

    @property
    def h_min(self) -> Tensor:
        """(...) the smallest eigenvalue; clearly negative means w* is a saddle."""
        return self.eigenvalues[..., 0]

    @property
    def num_curved(self) -> Tensor:
        """(...) how many eigenvalues lie above the null threshold."""
        return (self.eigenvalues > self.null_threshold[..., None]).sum(-1)


def _anchor(problem: Problem, dtype: torch.dtype | None) -> tuple[Tensor, ...]:
    """The anchor w* with a chain dim of 1 (`Problem.anchor`), detached (optionally cast)."""
    return tuple(a.detach() if dtype is None else a.detach().to(dtype) for a in problem.anchor)


def _flatten(tensors: tuple[Tensor, ...], event_ndims: tuple[int, ...]) -> Tensor:
    """(..., *event) per tensor -> (..., d)."""
    return torch.cat(
        [t.reshape(*t.shape[: t.ndim - k], -1) for t, k in zip(tensors, event_ndims, strict=True)],
        dim=-1,
    )


def _cast_batch(batch: Any, dtype: torch.dtype | None) -> Any:
    if dtype is None or batch is None:
        return batch
    if isinstance(batch, Tensor):
        return batch.to(dtype) if batch.is_floating_point() else batch
    return tuple(_cast_batch(t, dtype) for t in batch)


def _probe_dtype(problem: Problem) -> torch.dtype | None:
    # TMS and potentials are plain functions of their parameters: float64 costs little and
    # resolves eigenvalues 1e-3 of the largest. A module keeps its own dtype.
    return torch.float64 if problem.tms is not None or problem.data_batch is None else None


def full_gradient(problem: Problem, params: tuple[Tensor, ...], dtype: Any) -> Tensor:
    """(..., d) ∇L_n at `params` (chain dim 1) over the whole training set, in row chunks,
    by the problem's own gradient (analytic for TMS)."""
    return full_loss_and_gradient(problem, params, dtype)[1]


def full_loss_and_gradient(
    problem: Problem, params: tuple[Tensor, ...], dtype: Any
) -> tuple[Tensor, Tensor]:
    """((...), (..., d)) L_n and ∇L_n at `params` over the whole training set (`full_gradient`),
    the loss summed in float64."""
    if problem.data_batch is None:
        loss, grads = problem.loss_and_grad(params, None)
        return loss.double(), _flatten(grads, problem.event_ndims)
    n, total, loss = problem.n, None, None
    # Rows per chunk: fewer with more points, so that points × rows stays near GRADIENT_CHUNK.
    points = math.prod(params[0].shape[: params[0].ndim - problem.event_ndims[0]])
    chunk = max(1, GRADIENT_CHUNK // points)
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n))
        part, grads = problem.loss_and_grad(params, _cast_batch(problem.data_batch(rows), dtype))
        g = (len(rows) / n) * _flatten(grads, problem.event_ndims)
        part = (len(rows) / n) * part.detach().double()
        total = g if total is None else total + g
        loss = part if loss is None else loss + part
    return loss, total


def _hessian(problem: Problem, params: tuple[Tensor, ...], rows: Tensor | None) -> Tensor:
    """(..., d, d) the exact Hessian of the loss on `rows` of the training set (all of them
    when None; a potential has none) at every point, summed over row chunks in float64."""
    if problem.data_batch is None:
        return _hessian_points(problem, params, None).double()
    index = torch.arange(problem.n) if rows is None else rows
    points = math.prod(params[0].shape[: params[0].ndim - problem.event_ndims[0]])
    chunk = (
        HESSIAN_ROW_CHUNK if problem.hessian_fn is None else max(256, 4 * HESSIAN_CHUNK // points)
    )
    total = None
    for start in range(0, len(index), chunk):
        part = index[start : start + chunk]
        batch = problem.data_batch(part)
        if problem.hessian_fn is None:
            batch = _cast_batch(batch, _probe_dtype(problem))
        H = _hessian_points(problem, params, batch).double() * (len(part) / len(index))
        total = H if total is None else total + H
    return total


def _hessian_points(problem: Problem, params: tuple[Tensor, ...], batch: Any) -> Tensor:
    """(..., d, d) the exact Hessian of the batch loss at every point, in chunks along the
    first leading dim of at most HESSIAN_CHUNK points × rows: the double-backward graph
    holds every point's forward pass over the batch, gigabytes for thousands of anchors."""
    lead = params[0].ndim - problem.event_ndims[0]  # leading dims, the chain dim included
    if lead < 2 or not isinstance(batch, Tensor | None):
        return _hessian_graph(problem, params, batch)
    rows = 1 if batch is None else batch.shape[-2]
    per_index = math.prod(params[0].shape[1:lead]) * rows
    step = max(1, HESSIAN_CHUNK // per_index)
    size = params[0].shape[0]
    if step >= size:
        return _hessian_graph(problem, params, batch)
    # A batch with as many leading dims as the params (one dataset per index) is sliced too.
    sliced = batch is not None and batch.ndim == params[0].ndim and batch.shape[0] == size
    parts = [
        _hessian_graph(
            problem,
            tuple(p[i : i + step] for p in params),
            batch[i : i + step] if sliced else batch,
        )
        for i in range(0, size, step)
    ]
    return torch.cat(parts)


def _hessian_graph(problem: Problem, params: tuple[Tensor, ...], batch: Any) -> Tensor:
    """(..., d, d) the exact Hessian of the batch loss at every point: the problem's closed
    form where it has one (TMS), else one double-backward graph, d rows."""
    if problem.hessian_fn is not None:
        return problem.hessian_fn(tuple(p.detach() for p in params), batch)
    leaves = tuple(p.detach().requires_grad_(True) for p in params)
    with torch.enable_grad():
        loss = problem.loss_fn(leaves, batch)
        grads = torch.autograd.grad(loss.sum(), leaves, create_graph=True)
        g = _flatten(grads, problem.event_ndims)
        rows = []
        for i in range(g.shape[-1]):
            gi = g[..., i]
            if not gi.requires_grad:  # the loss is linear in this direction everywhere
                rows.append(torch.zeros_like(g))
                continue
            r = torch.autograd.grad(gi.sum(), leaves, retain_graph=True, allow_unused=True)
            r = tuple(
                torch.zeros_like(p) if x is None else x for x, p in zip(r, leaves, strict=True)
            )
            rows.append(_flatten(r, problem.event_ndims))
    H = torch.stack(rows, dim=-2).detach()
    return 0.5 * (H + H.transpose(-1, -2))


def _lanczos(
    problem: Problem, params: tuple[Tensor, ...], batch: Any, generator: torch.Generator
) -> Tensor:
    """(..., LANCZOS_STEPS) Ritz values of the batch-loss Hessian (full reorthogonalization)."""
    leaves = tuple(p.detach().requires_grad_(True) for p in params)
    shapes = [p.shape for p in leaves]
    with torch.enable_grad():
        loss = problem.loss_fn(leaves, batch)
        grads = torch.autograd.grad(loss.sum(), leaves, create_graph=True)
    g = _flatten(grads, problem.event_ndims)
    d = g.shape[-1]
    m = min(LANCZOS_STEPS, d)

    def hvp(v: Tensor) -> Tensor:
        with torch.enable_grad():
            out = torch.autograd.grad((g * v).sum(), leaves, retain_graph=True, allow_unused=True)
        out = tuple(
            torch.zeros(s, dtype=g.dtype, device=g.device) if x is None else x
            for x, s in zip(out, shapes, strict=True)
        )
        return _flatten(out, problem.event_ndims).detach()

    q = torch.randn(g.shape, generator=generator, dtype=g.dtype, device=generator.device)
    q = (q / q.norm(dim=-1, keepdim=True)).to(g.device)
    Q = [q]
    alphas, betas = [], []
    for j in range(m):
        w = hvp(Q[-1])
        alpha = (w * Q[-1]).sum(-1, keepdim=True)
        basis = torch.stack(Q, dim=-2)  # (..., j+1, d)
        for _ in range(2):  # full reorthogonalization, twice is enough
            w = w - ((basis @ w.unsqueeze(-1)) * basis).sum(-2)
        beta = w.norm(dim=-1, keepdim=True)
        alphas.append(alpha)
        if j < m - 1:
            betas.append(beta)
            Q.append(w / beta.clamp(min=1e-30))
    T = torch.diag_embed(torch.cat(alphas, -1))
    if betas:
        off = torch.cat(betas, -1)
        T = T + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    return torch.linalg.eigvalsh(T)


def probe(
    problem: Problem,
    generator: torch.Generator,
    params: tuple[Tensor, ...] | None = None,
    *,
    gradient: bool = True,
    rows: Tensor | None = None,
) -> Curvature:
    """The Hessian spectrum of L_n and the full-data gradient at every anchor (leading
    shape (...)), or at `params` (each (..., chain, *event), e.g. the chains' positions;
    leading shape (..., chain)). The Hessian is taken on every row, or on `rows` only
    (`probe_rows`). Without `gradient` the full-data gradient is skipped (grad_norm and
    newton_drop are then 0)."""
    if problem.loss_fn is None:
        raise ValueError("this problem has no differentiable loss to probe")
    dtype = _probe_dtype(problem)
    at = _anchor(problem, dtype) if params is None else _cast_params(params, dtype)
    d = sum(math.prod(p.shape[p.ndim - k :]) for p, k in zip(at, problem.event_ndims, strict=True))
    if d <= FULL_HESSIAN_MAX_PARAMS:
        H = _without_symmetries(problem, at, _hessian(problem, at, rows))
        eigenvalues, vectors = torch.linalg.eigh(H)
    else:
        batch = None if problem.data_batch is None else problem.data_batch(rows)
        eigenvalues = _lanczos(problem, at, _cast_batch(batch, dtype), generator)
        vectors = None
    if gradient:
        g = full_gradient(problem, at, dtype)
    else:  # only the spectrum is wanted (a pilot's chain positions)
        g = torch.zeros(*eigenvalues.shape[:-1], d, dtype=eigenvalues.dtype)
    vectors = None if vectors is None else vectors.double().cpu()
    spectrum = Curvature(
        eigenvalues=eigenvalues.double().cpu(),
        grad_norm=g.norm(dim=-1).double().cpu(),
        newton_drop=torch.zeros(()),
        eigenvectors=vectors,
    )
    out = dataclasses.replace(spectrum, newton_drop=_newton_drop(spectrum, g.double().cpu()))
    if params is not None:
        return out
    return Curvature(  # drop the anchor's chain dim of 1
        out.eigenvalues.squeeze(-2),
        out.grad_norm.squeeze(-1),
        out.newton_drop.squeeze(-1),
        eigenvectors=None if vectors is None else vectors.squeeze(-3),
    )


def _without_symmetries(problem: Problem, at: tuple[Tensor, ...], H: Tensor) -> Tensor:
    """P H P with P the projection off the tangents of the loss's known symmetries at `at`
    (`Problem.symmetry_tangents`): those directions are flat by symmetry, yet away from a
    critical point their curvature is ∇L·(G²w) ≈ ‖∇L‖‖w‖, 1e-3 of the largest at a trained
    TMS checkpoint, which no null threshold tells from a genuinely soft direction (the 8-gon
    has one at 2.4e-3)."""
    if problem.symmetry_tangents is None:
        return H
    T = problem.symmetry_tangents(at).to(H.dtype).to(H.device)  # (..., s, d)
    if T.shape[-2] == 0:
        return H
    U, S, _ = torch.linalg.svd(T.transpose(-1, -2), full_matrices=False)  # U: (..., d, s)
    keep = (S > 1e-8 * S.amax(-1, keepdim=True).clamp(min=1e-300)) & (S > 0)
    U = U * keep.unsqueeze(-2)
    P = torch.eye(H.shape[-1], dtype=H.dtype, device=H.device) - U @ U.transpose(-1, -2)
    return P @ H @ P


def _newton_drop(spectrum: Curvature, g: Tensor) -> Tensor:
    """½ gᵀH⁺g over the curved directions (an upper bound, ½‖g‖²/h_soft, without
    eigenvectors)."""
    curved = spectrum.eigenvalues > spectrum.null_threshold[..., None]
    if spectrum.eigenvectors is None:
        soft = spectrum.h_soft
        return 0.5 * (g**2).sum(-1) / torch.where(soft > 0, soft, math.inf)
    coeff = (spectrum.eigenvectors.transpose(-1, -2) @ g.unsqueeze(-1)).squeeze(-1)
    safe = torch.where(curved, spectrum.eigenvalues, torch.ones_like(coeff))
    return 0.5 * torch.where(curved, coeff**2 / safe, torch.zeros_like(coeff)).sum(-1)


def hessian_at(problem: Problem, params: tuple[Tensor, ...], rows: Tensor | None) -> Tensor:
    """(..., d, d) the Hessian of L_n on `rows` (all when None) at `params`."""
    return _hessian(problem, _cast_params(params, _probe_dtype(problem)), rows).cpu()


def _cast_params(params: tuple[Tensor, ...], dtype: torch.dtype | None) -> tuple[Tensor, ...]:
    return tuple(p.detach() if dtype is None else p.detach().to(dtype) for p in params)


def side_stream(generator: torch.Generator) -> torch.Generator:
    """A generator seeded from `generator`'s current state, which it leaves as it was: the
    probes draw from it, so that with given settings the chains see the same minibatches and
    noise as without the probes (same generator ⇒ same trajectory)."""
    state = generator.get_state().numpy().tobytes()
    seed = int.from_bytes(hashlib.blake2b(state, digest_size=8).digest(), "little") >> 1
    return torch.Generator(device=generator.device).manual_seed(seed)


def probe_rows(problem: Problem, generator: torch.Generator) -> Tensor | None:
    """HESSIAN_ROWS rows drawn from `generator` for the probes away from the anchor (None:
    all rows, when there are no more, or no data)."""
    if problem.data_batch is None or problem.n <= HESSIAN_ROWS:
        return None
    return torch.randperm(problem.n, generator=generator, device=generator.device)[:HESSIAN_ROWS]


#: The chains' curvature may differ from w*'s by at most this factor (on average over the
#: curved directions) for the quadratic picture behind λ = rank/2 to hold where they sample.
#: "Where they sample" is the minimum nearest to the chains where it is on w*'s set of minima
#: (`relaxed_ratio`), so that drifting along a flat set whose Hessian changes (a deep linear
#: network's gauge orbits, where the ratio against w* read 0.81–1.6 with λ̂ within 6%) is
#: not counted as anharmonic.
#: Set from the c = 6 k-gons (benchmarks/llc_accuracy.py prints the ratio per row): on the
#: exact population loss at nβ = 1000 the 5+ gives a ratio of 0.85 with the tempered
#: posterior itself 15% above λ, while at nβ ≥ 1e4, and for the 6-gon at 1000, ratios
#: within 0.9–1.1 go with λ̂ within 8%.
MAX_CURVATURE_RATIO = 1.15
#: ... and the softest curved direction must be stiff enough, nβ·h_soft ≥ MIN_SOFT_STIFFNESS
#: (posterior spread 1/√(nβ h_soft) ≲ 0.2/√h_soft): the 6-gon gives λ̂ 21% and 18% high at
#: nβ·h_soft = 4 and 10 (n = 1000, 3000) with curvature ratios still near 1, and within 4%
#: from 30 on (benchmarks/llc_accuracy.py). A heuristic from the k-gons, like the bound above.
MIN_SOFT_STIFFNESS = 20.0


def curvature_ratio(anchor: Curvature, hessians: Tensor, reference: Tensor) -> Tensor:
    """(...) the median over chains of mean_i v_iᵀ H(w_chain) v_i / v_iᵀ H(w*) v_i over the
    curved eigenvectors v_i of the Hessian at w*, both Hessians (`hessians` (..., chain, d, d),
    `reference` (..., d, d)) taken on the same rows: exactly 1 where the loss is quadratic
    over the posterior's extent, whatever the rows; far from 1 where the chains sample a
    region whose curvature differs (finite-nβ, anharmonic: λ̂ is not yet the asymptotic
    λ). NaN without eigenvectors, or without a curved direction at w* (w⁴: the ratio of
    nothing to nothing says nothing)."""
    if anchor.eigenvectors is None:
        return torch.full(anchor.h_max.shape, math.nan, dtype=torch.float64)
    return _ratio_to_anchor(anchor, hessians, reference).median(-1).values


def _ratio_to_anchor(anchor: Curvature, hessians: Tensor, reference: Tensor) -> Tensor:
    """(..., chain) `curvature_ratio` per chain position, before the median."""
    V = anchor.eigenvectors
    at_chains = torch.einsum("...di,...cde,...ei->...ci", V, hessians, V)  # (..., chain, d)
    at_anchor = torch.einsum("...di,...de,...ei->...i", V, reference, V).unsqueeze(-2)
    curved = (anchor.eigenvalues > anchor.null_threshold[..., None]).unsqueeze(-2)
    curved = curved & (at_anchor > 0)
    ratio = torch.where(
        curved, at_chains / at_anchor.clamp(min=1e-300), torch.zeros_like(at_chains)
    )
    per_chain = ratio.sum(-1) / curved.sum(-1).clamp(min=1)
    return torch.where(curved.any(-1), per_chain, torch.nan)  # nothing curved to compare


def _ratio_to_nearest(hessians: Tensor, at_nearest: Tensor, null_threshold: Tensor) -> Tensor:
    """(..., P) mean_i u_iᵀ H(w) u_i / u_iᵀ H(w⁰) u_i over the curved eigenvectors u_i of
    the Hessian at w⁰ (`at_nearest`), per point."""
    h0, U = torch.linalg.eigh(at_nearest)
    curved = h0 > null_threshold[..., None, None]
    rayleigh = torch.einsum("...di,...de,...ei->...i", U, hessians, U)
    ratio = torch.where(curved, rayleigh / torch.where(curved, h0, 1.0), 0.0)
    per_point = ratio.sum(-1) / curved.sum(-1).clamp(min=1)
    return torch.where(curved.any(-1), per_point, torch.nan)


def _unflatten(flat: Tensor, like: tuple[Tensor, ...], event_ndims: tuple[int, ...]) -> tuple:
    """(..., d) -> tensors shaped like `like` (the inverse of `_flatten`)."""
    out, start = [], 0
    for t, k in zip(like, event_ndims, strict=True):
        size = math.prod(t.shape[t.ndim - k :])
        out.append(flat[..., start : start + size].reshape(t.shape).to(t.dtype))
        start += size
    return tuple(out)


#: A chain position's nearest minimum w⁰ (`relaxed`) counts as on w*'s set of minima when
#: nβ|L_n(w⁰) − L_n(w*)| is at most this (one unit of the tempered log-likelihood, about what
#: two curved directions add to λ̂) and its Hessian has as many curved directions as w*'s.
SAME_MINIMUM_NATS = 1.0


def relaxed(
    problem: Problem, points: tuple[Tensor, ...], hessians: Tensor, null_threshold: Tensor
) -> tuple[tuple[Tensor, ...], Tensor]:
    """The minimum of L_n nearest to each point and L_n there: one Newton step
    w − H⁺∇L_n(w) over the directions where `hessians` (..., P, d, d) exceeds the anchor's
    `null_threshold` (...), with the gradient on every row. A chain on a flat set of minima
    sits a posterior width off it, and the step lands on it to second order in that width."""
    dtype = _probe_dtype(problem)
    _, g = full_loss_and_gradient(problem, _cast_params(points, dtype), dtype)
    h, V = torch.linalg.eigh(hessians)
    curved = h > null_threshold[..., None, None]
    coeff = (V.transpose(-1, -2) @ g.double().unsqueeze(-1)).squeeze(-1)
    coeff = torch.where(curved, coeff / torch.where(curved, h, 1.0), 0.0)
    step = (V @ coeff.unsqueeze(-1)).squeeze(-1)
    flat = _flatten(tuple(p.double() for p in points), problem.event_ndims) - step
    nearest = _unflatten(flat, points, problem.event_ndims)
    loss, _ = full_loss_and_gradient(problem, _cast_params(nearest, dtype), dtype)
    return nearest, loss


def relaxed_ratio(
    anchor: Curvature,
    hessians: Tensor,
    reference: Tensor,
    at_nearest: Tensor,
    on_anchor_set: Tensor,
) -> Tensor:
    """(...) the median over chain positions w of mean_i u_iᵀ H(w) u_i / u_iᵀ H(w⁰) u_i over
    the curved eigenvectors u_i of the Hessian at w⁰, the minimum nearest to w (`relaxed`),
    where w⁰ lies on w*'s set of minima (`on_anchor_set` (..., P)), and `curvature_ratio`'s
    comparison with w* itself (`reference`) elsewhere; all Hessians ((..., P, d, d)) on the
    same rows. Exactly 1 where the loss is quadratic over the posterior's width around that
    set, far from 1 where it is not (finite nβ, anharmonic: λ̂ is not yet the asymptotic λ).
    A chain that drifts along a flat set of minima (the gauge orbits of a deep linear network,
    along which the Hessian changes by a congruence) still samples a quadratic loss, which
    the comparison with w* alone would call anharmonic. NaN without eigenvectors, or where
    nothing is curved (w⁴: the ratio of nothing to nothing says nothing)."""
    if anchor.eigenvectors is None:
        return torch.full(anchor.h_max.shape, math.nan, dtype=torch.float64)
    near = _ratio_to_nearest(hessians, at_nearest, anchor.null_threshold)
    star = _ratio_to_anchor(anchor, hessians, reference)
    return torch.where(on_anchor_set, near, star).median(-1).values


def combine(anchor: Curvature, pilot: Curvature) -> Curvature:
    """The anchor's spectrum with h_max raised to the largest seen at the pilot's chain
    positions (`pilot` leading shape (..., chain)): curvature grows away from a singular
    minimum, and ε must be stable where the chains go."""
    pilot_max = pilot.eigenvalues[..., -1].amax(-1).clamp(min=0.0)
    if anchor.pilot_h_max is not None:
        pilot_max = torch.maximum(pilot_max, anchor.pilot_h_max)
    return dataclasses.replace(anchor, pilot_h_max=pilot_max)


#: w* counts as near a minimum when a Newton step would lower nβ·L_n by at most this
#: fraction of the quadratic model's λ (½ × the number of curved directions; the same bound
#: as `diagnostics.MAX_NEWTON_SHIFT`) and no Hessian eigenvalue is below
#: −SADDLE_FRACTION × the largest.
MAX_NEWTON_SHIFT = 0.05
SADDLE_FRACTION = 1e-2


def newton_shift(curvature: Curvature, nbeta: Any) -> Tensor:
    """(...) nβ·(L_n(w*) − L_n after a Newton step) / (½ · curved directions): the fraction of
    λ by which λ̂ is shifted because w* is not at the bottom of its basin."""
    nb = torch.as_tensor(nbeta, dtype=torch.float64)
    return nb * curvature.newton_drop / (0.5 * curvature.num_curved.clamp(min=1))


def is_saddle(curvature: Curvature) -> Tensor:
    """(...) a clearly negative Hessian eigenvalue at w*."""
    return curvature.h_min < -SADDLE_FRACTION * curvature.eigenvalues[..., -1].clamp(min=0.0)


def near_minimum(curvature: Curvature, nbeta: Any) -> Tensor:
    """(...) w* passes both the Newton-shift and the saddle check."""
    return (newton_shift(curvature, nbeta) <= MAX_NEWTON_SHIFT) & ~is_saddle(curvature)
