"""The curvature probe's chunking (`tms_slt.sampling.curvature`): thousands of anchors are
evaluated in pieces, and the pieces must add up to the whole."""

from __future__ import annotations

import torch

from tms_slt.models import get_activation
from tms_slt.sampling import curvature, problems


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
        whole_H = curvature._hessian_graph(problem, params, batch)
        whole_g = curvature.full_gradient(problem, params, None)
        monkeypatch.setattr(curvature, "HESSIAN_CHUNK", 2 * 3 * 300)  # 2 anchors per piece
        monkeypatch.setattr(curvature, "GRADIENT_CHUNK", 3 * 7 * 40)  # 40 rows per piece
        assert torch.allclose(curvature._hessian(problem, params, batch), whole_H, atol=1e-12)
        assert torch.allclose(curvature.full_gradient(problem, params, None), whole_g, atol=1e-12)
        monkeypatch.undo()
