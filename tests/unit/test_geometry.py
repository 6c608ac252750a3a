"""Unit tests for tms_slt.geometry (observables and k-gon classification)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tms_slt.geometry import (
    Configuration,
    classify,
    classify_batch,
    column_norms,
    dims_per_feature,
    feature_count,
    feature_dimensionality,
    gram_eigenvalues,
    kgon_labels,
    regular_kgon,
    represented,
)

leading_dims = st.lists(st.integers(min_value=1, max_value=3), min_size=0, max_size=3).map(tuple)


def _rotation(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


def _random_orthogonal(m: int, gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=torch.float64))
    return q


def _expected_label(k: int, b: torch.Tensor, rep: torch.Tensor, tol: float = 1e-3) -> str:
    unrep = b[~rep]
    return f"{k}" + "+" * int((unrep >= tol).sum()) + "-" * int((unrep < tol).sum())


def _kgon_model(k: int, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A regular k-gon, randomly rotated, with columns permuted and random-sign biases."""
    angle = float(torch.rand((), generator=gen, dtype=torch.float64)) * 2 * math.pi
    W = _rotation(angle) @ regular_kgon(k, n, dtype=torch.float64)
    perm = torch.randperm(n, generator=gen)
    W = W[:, perm]
    b = torch.rand(n, generator=gen, dtype=torch.float64) * 0.8 + 0.1
    b = b * torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
    return W, b


# ---------------------------------------------------------------- scalar observables


@settings(max_examples=25, deadline=None)
@given(lead=leading_dims, m=st.integers(1, 4), n=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_shapes_over_leading_dims(lead: tuple[int, ...], m: int, n: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(*lead, m, n, generator=gen, dtype=torch.float64)
    assert feature_count(W).shape == lead
    assert dims_per_feature(W).shape == lead
    assert column_norms(W).shape == (*lead, n)
    assert feature_dimensionality(W).shape == (*lead, n)
    assert gram_eigenvalues(W).shape == (*lead, m)
    assert represented(W).shape == (*lead, n)
    assert represented(W).dtype == torch.bool
    torch.testing.assert_close(feature_count(W), (W**2).sum(dim=(-1, -2)))
    torch.testing.assert_close(dims_per_feature(W), m / (W**2).sum(dim=(-1, -2)))
    torch.testing.assert_close(column_norms(W) ** 2, (W**2).sum(dim=-2))


def test_feature_count_and_dims_per_feature_values() -> None:
    W = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]])
    assert feature_count(W).item() == pytest.approx(15.0)
    assert dims_per_feature(W).item() == pytest.approx(2.0 / 15.0)
    assert feature_count(regular_kgon(5, 6)).item() == pytest.approx(5.0)


def test_dims_per_feature_zero_is_inf_not_nan() -> None:
    W = torch.zeros(3, 2, 4)
    W[1] = torch.ones(2, 4)
    out = dims_per_feature(W)
    assert torch.isinf(out[0]) and torch.isinf(out[2])
    assert out[1].item() == pytest.approx(2.0 / 8.0)
    assert not torch.isnan(out).any()


def test_batched_equals_per_element() -> None:
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(3, 4, 2, 6, generator=gen, dtype=torch.float64)
    for fn in (feature_count, dims_per_feature, column_norms, feature_dimensionality):
        full = fn(W)
        for i in range(3):
            for j in range(4):
                torch.testing.assert_close(full[i, j], fn(W[i, j]))


# ---------------------------------------------------------------- gram eigenvalues


@pytest.mark.parametrize("k", [3, 4, 5, 6, 7])
def test_gram_eigenvalues_regular_kgon(k: int) -> None:
    W = regular_kgon(k, 8, phase=0.37, dtype=torch.float64)
    ev = gram_eigenvalues(W)
    torch.testing.assert_close(ev, torch.full((2,), k / 2, dtype=torch.float64))


def test_gram_eigenvalues_digon() -> None:
    W = regular_kgon(2, 6, phase=1.1, dtype=torch.float64)
    ev = gram_eigenvalues(W)
    torch.testing.assert_close(ev, torch.tensor([0.0, 2.0], dtype=torch.float64))


def test_gram_eigenvalues_ascending_and_match_wtw_spectrum() -> None:
    gen = torch.Generator().manual_seed(1)
    W = torch.randn(5, 3, 7, generator=gen, dtype=torch.float64)
    ev = gram_eigenvalues(W)
    assert (ev[..., 1:] >= ev[..., :-1]).all()
    big = torch.linalg.eigvalsh(W.mT @ W)  # (5, 7), ascending; top 3 are nonzero
    torch.testing.assert_close(ev, big[..., -3:])
    torch.testing.assert_close(big[..., :-3], torch.zeros(5, 4, dtype=torch.float64))
    torch.testing.assert_close(ev.sum(-1), feature_count(W))


# ---------------------------------------------------------------- feature dimensionality


@pytest.mark.parametrize(
    ("W", "expected"),
    [
        (torch.eye(3, dtype=torch.float64), 1.0),
        (regular_kgon(2, 2, dtype=torch.float64), 1 / 2),
        (regular_kgon(3, 3, phase=0.2, dtype=torch.float64), 2 / 3),
        (regular_kgon(5, 5, phase=0.9, dtype=torch.float64), 2 / 5),
        (regular_kgon(6, 6, dtype=torch.float64), 1 / 3),
        (
            torch.tensor(
                [[1.0, 1.0, -1.0, -1.0], [1.0, -1.0, 1.0, -1.0], [1.0, -1.0, -1.0, 1.0]],
                dtype=torch.float64,
            ),
            3 / 4,
        ),
    ],
    ids=["orthogonal", "antipodal", "triangle", "pentagon", "hexagon", "tetrahedron"],
)
def test_feature_dimensionality_sticky_values(W: torch.Tensor, expected: float) -> None:
    gen = torch.Generator().manual_seed(2)
    for scale in (1.0, 0.3):  # D_i is invariant to rotations and to a global scale
        Wr = scale * _random_orthogonal(W.shape[0], gen) @ W
        D = feature_dimensionality(Wr)
        torch.testing.assert_close(D, torch.full_like(D, expected))


def test_feature_dimensionality_zero_columns_are_zero_never_nan() -> None:
    W = regular_kgon(5, 6, dtype=torch.float64)
    D = feature_dimensionality(W)
    torch.testing.assert_close(D[:5], torch.full((5,), 0.4, dtype=torch.float64))
    assert D[5].item() == 0.0
    Z = torch.zeros(4, 3, 5, requires_grad=True)
    Dz = feature_dimensionality(Z)
    assert (Dz == 0).all() and not torch.isnan(Dz).any()
    Dz.sum().backward()
    assert Z.grad is not None and torch.isfinite(Z.grad).all()


def test_feature_dimensionality_irregular_bounds() -> None:
    gen = torch.Generator().manual_seed(3)
    W = torch.randn(10, 2, 6, generator=gen, dtype=torch.float64)
    D = feature_dimensionality(W)
    assert ((D > 0) & (D <= 1 + 1e-12)).all()


# ---------------------------------------------------------------- represented / regular_kgon


def test_represented_threshold() -> None:
    W = torch.tensor([[1.0, 0.4, 0.0, 0.6], [0.0, 0.0, 0.0, 0.0]])
    assert represented(W).tolist() == [True, False, False, True]
    assert represented(W, threshold=0.5).tolist() == [True, False, False, True]
    assert represented(W, threshold=0.7).tolist() == [True, False, False, False]


def test_regular_kgon_structure_and_validation() -> None:
    W = regular_kgon(4, 6, m=3, norm=2.0, phase=0.5, dtype=torch.float64)
    assert W.shape == (3, 6)
    torch.testing.assert_close(column_norms(W)[:4], torch.full((4,), 2.0, dtype=torch.float64))
    assert (W[:, 4:] == 0).all() and (W[2] == 0).all()
    assert W[0, 0].item() == pytest.approx(2.0 * math.cos(0.5))
    assert regular_kgon(0, 3).abs().sum().item() == 0.0
    with pytest.raises(ValueError, match="k <= n"):
        regular_kgon(7, 6)
    with pytest.raises(ValueError, match="m >= 2"):
        regular_kgon(2, 6, m=1)


# ---------------------------------------------------------------- classification


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classify_regular_kgons(k: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(100 * k + seed)
    W, b = _kgon_model(k, 6, gen)
    rep = column_norms(W) > 0.5
    cfg = classify(W, b)
    assert isinstance(cfg, Configuration)
    assert cfg.k == k
    assert cfg.label == _expected_label(k, b, rep)
    assert cfg.label.startswith(str(k)) and len(cfg.label) == 1 + 6 - k
    assert cfg.represented == tuple(rep.tolist())
    assert cfg.bias_signs == tuple(int(s) for s in torch.sign(b).tolist())
    assert cfg.is_regular
    assert cfg.regular_residual < 1e-9
    assert str(cfg) == cfg.label


def test_label_convention_explicit() -> None:
    W = regular_kgon(4, 6, dtype=torch.float64)
    b = torch.tensor([0.0, 0.0, 0.0, 0.0, -0.2, 0.3], dtype=torch.float64)
    assert classify(W, b).label == "4+-"
    assert classify(W, torch.tensor([0.0, 0, 0, 0, 0.3, 0.2])).label == "4++"
    # |b| below bias_tol counts as 0 and is reported with the non-positive ones.
    cfg = classify(W, torch.tensor([0.0, 0, 0, 0, 1e-5, -1e-5]))
    assert cfg.label == "4--"
    assert cfg.bias_signs[4:] == (0, 0)
    assert classify(regular_kgon(5, 6), torch.tensor([0.0] * 5 + [0.5])).label == "5+"
    assert classify(regular_kgon(6, 6), torch.zeros(6)).label == "6"


def test_classify_irregular_configurations() -> None:
    W = regular_kgon(5, 6, dtype=torch.float64)
    b = torch.zeros(6, dtype=torch.float64)
    # Move one vertex by 0.3 rad along the circle: two gaps change by 0.3.
    W_ang = W.clone()
    W_ang[:, 2] = _rotation(0.3) @ W[:, 2]
    cfg = classify(W_ang, b)
    assert cfg.k == 5 and not cfg.is_regular
    assert cfg.regular_residual == pytest.approx(0.3, abs=1e-9)
    # Stretch one column: relative norm spread 0.5 / mean.
    W_norm = W.clone()
    W_norm[:, 0] *= 1.5
    cfg = classify(W_norm, b)
    assert not cfg.is_regular
    assert cfg.regular_residual == pytest.approx(0.5 / 1.1, abs=1e-9)
    # Two features on the same ray plus a triangle: a 4-column configuration, not a 4-gon.
    W_dup = regular_kgon(3, 6, dtype=torch.float64)
    W_dup[:, 3] = W_dup[:, 0]
    cfg = classify(W_dup, b)
    assert cfg.k == 4 and not cfg.is_regular
    # A tolerance loose enough accepts the angular perturbation.
    assert classify(W_ang, b, regular_tol=0.5).is_regular


def test_classify_batch_agrees_with_single_and_labels() -> None:
    gen = torch.Generator().manual_seed(7)
    Ws, bs = [], []
    for i in range(3 * 4):
        W, b = _kgon_model(i % 7, 6, gen)
        W = W + 0.05 * torch.randn(W.shape, generator=gen, dtype=torch.float64) * (i % 2)
        Ws.append(W)
        bs.append(b)
    W = torch.stack(Ws).reshape(3, 4, 2, 6)
    b = torch.stack(bs).reshape(3, 4, 6)
    configs = classify_batch(W, b)
    labels = kgon_labels(W, b)
    assert configs.shape == (3, 4) and configs.dtype == object
    assert labels.shape == (3, 4) and labels.dtype.kind == "U"
    for i in range(3):
        for j in range(4):
            single = classify(W[i, j], b[i, j])
            assert configs[i, j].label == single.label == labels[i, j]
            assert configs[i, j].k == single.k
            assert configs[i, j].represented == single.represented
            assert configs[i, j].bias_signs == single.bias_signs
            assert configs[i, j].is_regular == single.is_regular
            assert configs[i, j].regular_residual == pytest.approx(single.regular_residual)
    assert len({c.is_regular for c in configs.ravel()}) == 2  # both kinds present


def test_classify_batch_leading_dims_shapes() -> None:
    gen = torch.Generator().manual_seed(8)
    W = torch.randn(3, 4, 2, 6, generator=gen)
    b = torch.randn(3, 4, 6, generator=gen)
    assert classify_batch(W, b).shape == (3, 4)
    assert kgon_labels(W, b).shape == (3, 4)
    assert classify_batch(W[0, 0], b[0, 0]).shape == ()
    assert kgon_labels(W[0, 0], b[0, 0]).shape == ()
    assert feature_dimensionality(W).shape == (3, 4, 6)
    assert gram_eigenvalues(W).shape == (3, 4, 2)


@settings(max_examples=20, deadline=None)
@given(lead=leading_dims, n=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_kgon_labels_shape_property(lead: tuple[int, ...], n: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(*lead, 2, n, generator=gen)
    b = torch.randn(*lead, n, generator=gen)
    labels = kgon_labels(W, b)
    assert labels.shape == lead
    k = represented(W).sum(-1).numpy()
    assert all(
        int(lab[0]) == kk and len(lab) == 1 + n - kk
        for lab, kk in zip(labels.ravel(), np.ravel(k), strict=True)
    )


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="m = 2"):
        classify(torch.zeros(3, 6), torch.zeros(6))
    with pytest.raises(ValueError, match="b must have shape"):
        classify(torch.zeros(2, 6), torch.zeros(5))
    with pytest.raises(ValueError, match="one model"):
        classify(torch.zeros(4, 2, 6), torch.zeros(4, 6))
    with pytest.raises(ValueError, match="b must have shape"):
        classify_batch(torch.zeros(4, 2, 6), torch.zeros(3, 6))
    with pytest.raises(ValueError, match="m = 2"):
        kgon_labels(torch.zeros(4, 3, 6), torch.zeros(4, 6))
    with pytest.raises(ValueError, match=r"\(\.\.\., m, n\)"):
        feature_count(torch.zeros(6))
    with pytest.raises(ValueError, match=r"\(\.\.\., m, n\)"):
        gram_eigenvalues(torch.zeros(()))


def test_dead_column_label_is_functional_on_the_5plus_family() -> None:
    """A short live sixth column with a slightly negative bias (‖W₆‖² + b₆ > 0: it outputs
    on its own input) is in the 5+ family, with loss below the 5−'s; a sign-of-b rule would
    call it "5−". The functional criterion labels it "5+", and a truly dead column (‖W₆‖² +
    b₆ < 0, anywhere in the flat set) "5−"."""
    from tms_slt.theory import kgon_critical_point, kgon_loss, tms_population_loss

    W, b = (torch.tensor(a) for a in kgon_critical_point(5, 6, variant="-"))
    W_live, b_live = W.clone(), b.clone()
    # Along vertex 1 (72°), norm 0.35 < 0.5; ‖W₆‖² + b₆ = 0.1175 > 0.
    W_live[:, 5] = 0.35 * torch.tensor([math.cos(0.4 * math.pi), math.sin(0.4 * math.pi)])
    b_live[5] = -0.005
    assert float(tms_population_loss(W_live, b_live)) < kgon_loss(5, 6, variant="-")
    assert classify(W_live, b_live).label == "5+"
    assert classify(W_live, b_live).bias_signs[5] == -1  # its bias is negative all the same
    W_dead, b_dead = W_live.clone(), b_live.clone()
    W_dead[:, 5] = torch.tensor([0.0, 0.1], dtype=torch.float64)
    b_dead[5] = -0.3  # ‖W₆‖² + b₆ = −0.29: dead, inside the flat set
    assert float(tms_population_loss(W_dead, b_dead)) == pytest.approx(
        kgon_loss(5, 6, variant="-"), abs=1e-12
    )
    assert classify(W_dead, b_dead).label == "5-"
    # Batched labels agree with the one-model classifier.
    labels = kgon_labels(torch.stack([W_live, W_dead]), torch.stack([b_live, b_dead]))
    assert labels.tolist() == ["5+", "5-"]
