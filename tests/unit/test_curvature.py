"""The curvature probe (`tms_slt.sampling.curvature`): thousands of anchors and every row
are evaluated in pieces, and the pieces must add up to the whole; the closed-form TMS
Hessian equals double backward; the probes compare like with like."""

from __future__ import annotations

import dataclasses
import math

import torch

from tms_slt.models import get_activation
from tms_slt.sampling import chains, checks, curvature, problems


def _problem(anchors: int, per_anchor_data: bool):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(anchors, 2, 5, generator=g, dtype=torch.float64) * 0.5
    b = torch.randn(anchors, 5, generator=g, dtype=torch.float64) * 0.1
    shape = (anchors, 300, 5) if per_anchor_data else (300, 5)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    x = x * (torch.rand(shape, generator=g, dtype=torch.float64) < 0.3)
    return problems.tms_problem(
        W,
        b,
        x,
        None,
        get_activation("relu"),
        sample_bias=True,
        num_chains=3,
        batch_size=50,
        dims=("anchor",),
        coords={},
    )


def test_chunked_hessian_and_gradient_equal_the_whole(monkeypatch):
    for per_anchor_data in (False, True):
        problem = _problem(7, per_anchor_data)
        params = problem.params  # (anchor, chain, ...): 21 points
        batch = problem.data_batch(None)
        autograd = dataclasses.replace(problem, hessian_fn=None)
        whole_H = curvature._hessian_graph(autograd, params, batch)
        whole_g = curvature.full_gradient(problem, params, None)
        monkeypatch.setattr(curvature, "HESSIAN_CHUNK", 2 * 3 * 300)  # 2 anchors per piece
        monkeypatch.setattr(curvature, "HESSIAN_ROW_CHUNK", 70)  # 5 row pieces
        monkeypatch.setattr(curvature, "GRADIENT_CHUNK", 3 * 7 * 40)  # 40 rows per piece
        assert torch.allclose(curvature._hessian(autograd, params, None), whole_H, atol=1e-12)
        # the closed form runs in the data's precision (float64 here) and equals autograd
        assert torch.allclose(curvature._hessian(problem, params, None), whole_H, atol=1e-10)
        assert torch.allclose(curvature.full_gradient(problem, params, None), whole_g, atol=1e-12)
        monkeypatch.undo()


def test_curvature_ratio_is_one_on_a_quadratic_loss_whatever_the_rows():
    """Linear regression is exactly quadratic: the Hessian is the same at every point, so the
    chains' curvature over the anchor's on the same rows is 1 to rounding, even on a random
    subset of rows whose Hessian differs from the full data's (the old ratio compared a
    subset at the chains with another subset at w*, and read 1.055 here)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 6, generator=g)
    y = x @ torch.randn(6, 2, generator=g) + 0.5 * torch.randn(4000, 2, generator=g)
    model = torch.nn.Linear(6, 2, bias=False)
    problem = problems.module_problem(
        model,
        lambda f, batch: ((f(batch[0]) - batch[1]) ** 2).sum(-1).mean(),
        (x, y),
        num_chains=3,
        batch_size=100,
    )
    curv = curvature.probe(problem, g)
    rows = curvature.probe_rows(problem, g)
    assert rows is not None and len(rows) == curvature.HESSIAN_ROWS
    moved = tuple(p + torch.randn(p.shape, generator=g) for p in problem.params)
    anchor = tuple(p[:1] for p in problem.params)
    reference = curvature.hessian_at(problem, anchor, rows).squeeze(-3)
    ratio = curvature.curvature_ratio(curv, curvature.hessian_at(problem, moved, rows), reference)
    full = curvature.hessian_at(problem, anchor, None).squeeze(-3)
    assert not torch.allclose(reference, full, rtol=1e-2)  # the subset's Hessian differs ...
    assert abs(float(ratio) - 1) < 1e-6  # ... and the like-for-like ratio does not see it


def _fitted_rrr(g: torch.Generator, M: int = 5, H: int = 2, N: int = 4):
    """A reduced-rank regression (rank-2 teacher, n = 8000, σ = 0.7) fitted by L-BFGS to a
    minimum of L_n: its problem and squared-error loss."""
    n = 8000
    x = torch.randn(n, M, generator=g, dtype=torch.float64)
    teacher = torch.randn(N, 2, generator=g, dtype=torch.float64) @ torch.randn(
        2, M, generator=g, dtype=torch.float64
    )
    y = x @ teacher.T + 0.7 * torch.randn(n, N, generator=g, dtype=torch.float64)
    model = torch.nn.Sequential(
        torch.nn.Linear(M, H, bias=False), torch.nn.Linear(H, N, bias=False)
    ).double()

    def loss(f, batch):
        return ((f(batch[0]) - batch[1]) ** 2).sum(-1).mean()

    opt = torch.optim.LBFGS(
        model.parameters(),
        max_iter=2000,
        tolerance_grad=1e-13,
        tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        value = loss(model, (x, y))
        value.backward()
        return value

    opt.step(closure)
    return problems.module_problem(model, loss, (x, y), num_chains=2, batch_size=100)


def test_a_minimum_with_flat_directions_is_no_saddle():
    """A reduced-rank regression fitted to a minimum of L_n has a continuum of flat directions
    (B A = B G G⁻¹ A). On all rows their eigenvalues are ~0; on a 1024-row subset they were
    off by ±2% of h_max, and the minimum was called a saddle."""
    g = torch.Generator().manual_seed(1)
    M, H, N = 5, 2, 4
    problem = _fitted_rrr(g, M, H, N)
    curv = curvature.probe(problem, g)
    assert float(curv.h_min) > -1e-6 * float(curv.h_max)
    assert not bool(curvature.is_saddle(curv))
    assert int(curv.num_curved) == M * H + H * N - H * H  # the flat set: GL(H) acting on (A, B)


def test_chains_drifting_along_a_gauge_orbit_sample_a_quadratic_loss():
    """(A, B) → (GA, BG⁻¹) leaves a reduced-rank regression's loss unchanged and changes its
    Hessian by a congruence. Chains that drift along that orbit, a posterior width off it,
    sample a loss as quadratic as at w*: the ratio against the nearest minimum reads 1 where
    the comparison with w*'s eigenvectors alone reads far from it (0.81–0.83 on the fitted
    DLN (6, 2, 6) and (4, 3, 4) of benchmarks/llc_accuracy.py, whose λ̂ is within 2%)."""
    g = torch.Generator().manual_seed(1)
    problem = _fitted_rrr(g)
    curv = curvature.probe(problem, g)
    A, B = (a[0] for a in problem.anchor)  # (H, M), (N, H)
    positions = [[], []]
    for scale in (1.6, 1.8, 2.0, 2.2, 0.6, 0.5, 0.45, 0.4):  # 2 chains × 4 kept positions
        G = torch.diag(torch.tensor([scale, 1 / scale], dtype=torch.float64))
        positions[0].append(G @ A + 1e-3 * torch.randn(A.shape, generator=g, dtype=A.dtype))
        positions[1].append(B @ torch.linalg.inv(G))
    params = tuple(torch.stack(p).reshape(2, 4, *p[0].shape) for p in positions)
    traces = chains.Traces(loss=torch.zeros(2, 4), mala_accept=None, params=params)
    nbeta = problem.n / math.log(problem.n)
    relaxed = float(checks.curvature_ratio_at_ends(problem, curv, traces, nbeta))
    flat = tuple(p.flatten(0, 1) for p in params)
    reference = curvature.hessian_at(problem, problem.anchor, curv.rows).squeeze(-3)
    hessians = curvature.hessian_at(problem, flat, curv.rows)
    against_anchor = float(curvature.curvature_ratio(curv, hessians, reference))
    assert abs(against_anchor - 1) > 0.15  # outside MAX_CURVATURE_RATIO's band ...
    assert abs(relaxed - 1) < 0.01  # ... and quadratic around the nearest minimum


def test_chains_off_the_anchors_set_of_minima_are_compared_with_w_star():
    """Where the nearest minimum is not on w*'s set (a different level or rank), the chains
    are compared with w* itself: `relaxed_ratio` there is `curvature_ratio`."""
    problem = _problem(3, per_anchor_data=False)
    curv = curvature.probe(problem, torch.Generator().manual_seed(0))
    anchor = tuple(p[:, :1] for p in problem.params)
    g = torch.Generator().manual_seed(2)
    moved = tuple(
        p + 0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype) for p in problem.params
    )
    reference = curvature.hessian_at(problem, anchor, None).squeeze(-3)
    hessians = curvature.hessian_at(problem, moved, None)
    nearest, _ = curvature.relaxed(problem, moved, hessians, curv.null_threshold)
    at_nearest = curvature.hessian_at(problem, nearest, None)
    off = torch.zeros(hessians.shape[:-2], dtype=torch.bool)
    ratio = curvature.relaxed_ratio(curv, hessians, reference, at_nearest, off)
    assert torch.equal(ratio, curvature.curvature_ratio(curv, hessians, reference))
    on = curvature.relaxed_ratio(curv, hessians, reference, at_nearest, ~off)
    assert not torch.equal(on, ratio)


def test_the_rotation_of_a_tms_is_projected_out_of_the_spectrum():
    """Off a critical point the rotation W → RW (a symmetry: WᵀW is unchanged) has curvature
    ∇L·(G²w), here well above the null threshold, where no threshold could tell it from a
    soft curved direction. The probe projects it out: along it the spectrum is 0."""
    problem = _problem(3, per_anchor_data=False)
    anchor = tuple(p[:, :1] for p in problem.params)
    H = curvature.hessian_at(problem, anchor, None).squeeze(-3)
    t = problems.rotation_tangents(anchor, with_bias=True).squeeze(-3).squeeze(-2).double()
    t = t / t.norm(dim=-1, keepdim=True)
    along = torch.einsum("ad,ade,ae->a", t, H, t)
    h_max = torch.linalg.eigvalsh(H)[..., -1]
    assert (along.abs() > 10 * curvature.NULL_FRACTION * h_max).all()  # off a minimum
    curv = curvature.probe(problem, torch.Generator().manual_seed(0))
    V, ev = curv.eigenvectors, curv.eigenvalues
    projected = torch.einsum("ad,adi,ai,aei,ae->a", t, V, ev, V, t)
    assert (projected.abs() < 1e-10 * h_max).all()
