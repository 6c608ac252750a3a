"""Geometric observables of TMS parameters, pure and batched over leading dimensions.

A toy model of superposition (Elhage et al. 2022, "Toy Models of Superposition") maps
x ↦ act(WᵀW x + b) with ``W: (..., m, n)`` (m hidden dimensions, n features; column
``W[..., :, i]`` is the embedding of feature i) and ``b: (..., n)``. Every function here
accepts arbitrary leading dimensions ``...`` (instances, checkpoints, chains) and does its
arithmetic in torch; numpy appears only where Python objects or strings are produced
(:func:`classify_batch`, :func:`kgon_labels`).

The k-gon classification follows Chen, Lau, Mendel, Wei, Murfet 2023, "Dynamical versus
Bayesian phase transitions in a toy model of superposition" (arXiv 2310.06301): with m = 2,
the critical points are regular k-gons (k columns at the vertices of a regular polygon, the
other n − k columns zero), distinguished further by the signs of the biases of the zero
columns.

Label convention (:attr:`Configuration.label`): ``f"{k}"`` followed by one ``"+"`` for every
*unrepresented* feature whose column is alive on its own input, then one ``"-"`` for every
unrepresented feature whose column is dead there. The criterion is functional: on the
one-hot input t e_i (t ∈ [0, 1], Chen et al.'s high-sparsity data) output i is
ReLU(‖W_i‖² t + b_i), identically zero iff ‖W_i‖² + b_i ≤ 0 (b_i ≤ 0 follows), so a column
is dead ("−") where ‖W_i‖² + b_i < ``bias_tol`` (numerically zero counts as dead) and alive
("+") otherwise. At the k-gon critical points (W_i = 0) this is the sign of b_i, Chen et
al.'s k^{σ₊σ₋}; away from them it keeps a short live column with a slightly negative bias
(the 5+ family: its output on its own input is positive and its loss below the 5−'s) out
of the "−" class, which a sign-of-b rule would put there. Pluses come first, so the label
depends only on the counts, e.g. ``"6"`` (k = n, no suffix), ``"5+"``, ``"5-"``, ``"4+-"``,
``"4--"`` for n = 6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Configuration",
    "classify",
    "classify_batch",
    "column_norms",
    "dims_per_feature",
    "feature_count",
    "feature_dimensionality",
    "gram_eigenvalues",
    "kgon_labels",
    "regular_kgon",
    "represented",
]

_TWO_PI = 2.0 * math.pi


def _check_w(W: Tensor, name: str = "W") -> None:
    if not isinstance(W, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(W).__name__}")
    if W.ndim < 2:
        raise ValueError(f"{name} must have shape (..., m, n), got shape {tuple(W.shape)}")


def feature_count(W: Tensor) -> Tensor:
    """Squared Frobenius norm ‖W‖²_F = Σ_{h,i} W_{hi}², shape ``(...)``.

    Elhage et al. (2022) use it as a soft count of represented features: each feature
    represented with a unit-norm column contributes 1.
    """
    _check_w(W)
    return W.square().sum(dim=(-2, -1))


def dims_per_feature(W: Tensor) -> Tensor:
    """Dimensions per feature m / ‖W‖²_F (Elhage et al. 2022), shape ``(...)``.

    Returns ``+inf`` (never NaN) where ``W`` is identically zero.
    """
    _check_w(W)
    fc = feature_count(W)
    m = W.shape[-2]
    safe = torch.where(fc > 0, fc, torch.ones_like(fc))
    return torch.where(fc > 0, m / safe, torch.full_like(fc, math.inf))


def column_norms(W: Tensor) -> Tensor:
    """Euclidean norms ‖W_i‖ of the feature columns, shape ``(..., n)``."""
    _check_w(W)
    return torch.linalg.vector_norm(W, dim=-2)


def feature_dimensionality(W: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-feature dimensionality of Elhage et al. (2022), shape ``(..., n)``.

    D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)²  with Ŵ_i = W_i / ‖W_i‖,

    computed as ‖W_i‖⁴ / Σ_j G_ij² with G = WᵀW (the sum includes j = i). Sticky values:
    1 (orthogonal), 3/4 (tetrahedron), 2/3 (triangle), 1/2 (antipodal pair), 2/5
    (pentagon); a regular k-gon (k ≥ 3) gives 2/k. A column with ‖W_i‖² ≤ ``eps`` counts as
    zero and gets D_i = 0 (no NaN, and finite gradients).
    """
    _check_w(W)
    sq = W.square().sum(dim=-2)  # (..., n)
    gram = W.mT @ W  # (..., n, n)
    denom = gram.square().sum(dim=-1)  # (..., n)
    nonzero = sq > eps
    safe_denom = torch.where(nonzero, denom, torch.ones_like(denom))
    safe_sq = torch.where(nonzero, sq, torch.zeros_like(sq))
    return torch.where(nonzero, safe_sq.square() / safe_denom, torch.zeros_like(sq))


def gram_eigenvalues(W: Tensor) -> Tensor:
    """Eigenvalues of the m × m Gram matrix W Wᵀ in ascending order, shape ``(..., m)``.

    These are the squared singular values of W, i.e. the nonzero spectrum of WᵀW padded
    with zeros. For a regular k-gon of unit columns in m = 2 (k ≥ 3) both equal k/2; a
    digon (antipodal unit pair) gives (0, 2). Uses ``torch.linalg.eigvalsh``.
    """
    _check_w(W)
    return torch.linalg.eigvalsh(W @ W.mT)


def represented(W: Tensor, threshold: float = 0.5) -> Tensor:
    """Boolean mask ``‖W_i‖ > threshold`` of represented features, shape ``(..., n)``.

    The threshold is an absolute column norm. In the TMS of Chen et al. (2023), inputs lie
    in [0, 1] and the represented columns of the k-gon critical points have norm ≈ 1 while
    the others are exactly 0, so the default 0.5 (half the nominal norm) separates the two.
    """
    _check_w(W)
    return column_norms(W) > threshold


@dataclass(frozen=True)
class Configuration:
    """k-gon classification of one m = 2 TMS model (Chen et al. 2023, arXiv 2310.06301).

    Attributes:
        k: number of represented columns (``‖W_i‖ > norm_threshold``).
        label: ``f"{k}"`` + ``"+"`` per unrepresented feature alive on its own input
            (‖W_i‖² + b_i ≥ ``bias_tol``) + ``"-"`` per dead one (see the module docstring).
        represented: per-feature mask.
        bias_signs: per-feature sign of b_i in {-1, 0, +1}; 0 where |b_i| < ``bias_tol``.
        regular_residual: distance from a regular k-gon, in radians plus a relative norm
            spread: max_j |g_j − 2π/k| over the k cyclic angular gaps g_j of the sorted
            represented columns, plus (max − min)/mean of their norms. 0 for k ≤ 1 angles.
        is_regular: ``regular_residual < regular_tol``.
    """

    k: int
    label: str
    represented: tuple[bool, ...]
    bias_signs: tuple[int, ...]
    regular_residual: float
    is_regular: bool

    def __str__(self) -> str:
        return self.label


def _check_wb(W: Tensor, b: Tensor) -> None:
    _check_w(W)
    if not isinstance(b, Tensor):
        raise TypeError(f"b must be a torch.Tensor, got {type(b).__name__}")
    if W.shape[-2] != 2:
        raise ValueError(
            f"k-gon classification needs m = 2 hidden dimensions, got W of shape {tuple(W.shape)}"
        )
    expected = (*W.shape[:-2], W.shape[-1])
    if tuple(b.shape) != expected:
        raise ValueError(
            f"b must have shape {expected} to match W {tuple(W.shape)}, got {tuple(b.shape)}"
        )


def _classify_tensors(
    W: Tensor, b: Tensor, norm_threshold: float, regular_tol: float, bias_tol: float
) -> dict[str, Tensor]:
    """Batched core of :func:`classify_batch`: all quantities as tensors over ``...``."""
    _check_wb(W, b)
    W = W.detach().to(torch.float64)
    b = b.detach().to(torch.float64)
    n = W.shape[-1]
    norms = column_norms(W)  # (..., n)
    rep = norms > norm_threshold
    k = rep.sum(dim=-1)  # (...)
    signs = torch.where(b.abs() < bias_tol, torch.zeros_like(b), torch.sign(b)).to(torch.int64)
    alive = norms.square() + b >= bias_tol  # output i on input e_i is not identically 0
    n_pos = (~rep & alive).sum(dim=-1)
    n_neg = (~rep & ~alive).sum(dim=-1)

    # Angular gaps of the represented columns; unrepresented ones are sorted to the end.
    angles = torch.atan2(W[..., 1, :], W[..., 0, :])  # in (-π, π]
    angles = torch.where(rep, angles, torch.full_like(angles, 4.0 * math.pi))
    srt, _ = torch.sort(angles, dim=-1)
    j = torch.arange(n, device=W.device)
    kk = k.unsqueeze(-1)  # (..., 1)
    valid = j < kk
    nxt = torch.roll(srt, shifts=-1, dims=-1)
    wrap = srt[..., :1] + _TWO_PI
    nxt = torch.where(j == kk - 1, wrap, nxt)
    gaps = nxt - srt
    target = _TWO_PI / kk.clamp(min=1).to(srt.dtype)
    ang_dev = torch.where(valid, (gaps - target).abs(), torch.zeros_like(gaps)).amax(dim=-1)

    big = torch.full_like(norms, math.inf)
    nmax = torch.where(rep, norms, -big).amax(dim=-1)
    nmin = torch.where(rep, norms, big).amin(dim=-1)
    nmean = torch.where(rep, norms, torch.zeros_like(norms)).sum(-1) / k.clamp(min=1)
    spread = torch.where(k > 0, (nmax - nmin) / nmean.clamp(min=1e-300), torch.zeros_like(nmean))
    residual = ang_dev + spread
    return {
        "represented": rep,
        "bias_signs": signs,
        "k": k,
        "n_pos": n_pos,
        "n_neg": n_neg,
        "residual": residual,
        "is_regular": residual < regular_tol,
    }


def _labels(k: np.ndarray, n_pos: np.ndarray, n_neg: np.ndarray) -> np.ndarray:
    combos, inverse = np.unique(
        np.stack([k, n_pos, n_neg], axis=-1).reshape(-1, 3), axis=0, return_inverse=True
    )
    strings = np.array([f"{a}{'+' * p}{'-' * q}" for a, p, q in combos.tolist()], dtype=str)
    return strings[inverse.reshape(-1)].reshape(k.shape)


def classify_batch(
    W: Tensor,
    b: Tensor,
    *,
    norm_threshold: float = 0.5,
    regular_tol: float = 0.1,
    bias_tol: float = 1e-3,
) -> np.ndarray:
    """:func:`classify` over leading dims: numpy object array of :class:`Configuration`.

    ``W: (..., 2, n)``, ``b: (..., n)``; the result has shape ``(...)`` (0-d for a single
    model). The geometry is computed in one batched torch pass; only the construction of the
    Python objects loops.
    """
    t = _classify_tensors(W, b, norm_threshold, regular_tol, bias_tol)
    arr = {key: val.cpu().numpy() for key, val in t.items()}
    labels = _labels(arr["k"], arr["n_pos"], arr["n_neg"])
    shape = labels.shape
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(shape):
        out[idx] = Configuration(
            k=int(arr["k"][idx]),
            label=str(labels[idx]),
            represented=tuple(bool(x) for x in arr["represented"][idx]),
            bias_signs=tuple(int(x) for x in arr["bias_signs"][idx]),
            regular_residual=float(arr["residual"][idx]),
            is_regular=bool(arr["is_regular"][idx]),
        )
    return out


def classify(
    W: Tensor,
    b: Tensor,
    *,
    norm_threshold: float = 0.5,
    regular_tol: float = 0.1,
    bias_tol: float = 1e-3,
) -> Configuration:
    """Classify one model ``W: (2, n)``, ``b: (n,)`` as a k-gon (Chen et al. 2023).

    Feature i is represented when ‖W_i‖ > ``norm_threshold``; k counts them. The label is
    k followed by "+" for each unrepresented feature alive on its own one-hot input
    (‖W_i‖² + b_i ≥ ``bias_tol``) and "−" for each dead one (module docstring);
    ``bias_signs`` reports b_i as 0 when |b_i| < ``bias_tol``. ``regular_residual`` =
    max_j |g_j − 2π/k| (cyclic angular gaps of the represented columns, radians) +
    (max − min)/mean of their norms, and ``is_regular`` is ``regular_residual < regular_tol``.
    """
    if isinstance(W, Tensor) and W.ndim != 2:
        raise ValueError(
            f"classify takes one model W: (2, n); got shape {tuple(W.shape)}, use classify_batch"
        )
    return classify_batch(
        W, b, norm_threshold=norm_threshold, regular_tol=regular_tol, bias_tol=bias_tol
    )[()]


def kgon_labels(
    W: Tensor,
    b: Tensor,
    *,
    norm_threshold: float = 0.5,
    regular_tol: float = 0.1,
    bias_tol: float = 1e-3,
) -> np.ndarray:
    """Labels (e.g. ``"5+"``) of :func:`classify_batch` as a numpy str array of shape ``(...)``.

    Convenient for storing in xarray. The label does not encode regularity; use
    :func:`classify_batch` for ``is_regular``.
    """
    t = _classify_tensors(W, b, norm_threshold, regular_tol, bias_tol)
    return _labels(t["k"].cpu().numpy(), t["n_pos"].cpu().numpy(), t["n_neg"].cpu().numpy())


def regular_kgon(
    k: int,
    n: int,
    m: int = 2,
    *,
    norm: float = 1.0,
    phase: float = 0.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """W of shape ``(m, n)`` whose first k columns are a regular k-gon, the rest zero.

    Column i < k is norm · (cos θ_i, sin θ_i, 0, …) with θ_i = phase + 2πi/k (in the first
    two hidden dimensions); k = 2 is the antipodal digon, k = 1 a single column, k = 0 the
    zero matrix. These are the critical points of Chen et al. (2023) for m = 2.
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if m < 2:
        raise ValueError(f"a k-gon needs m >= 2 hidden dimensions, got m={m}")
    W = torch.zeros(m, n, dtype=dtype, device=device)
    if k > 0:
        theta = phase + _TWO_PI * torch.arange(k, dtype=torch.float64) / k
        W[0, :k] = (norm * torch.cos(theta)).to(W.dtype)
        W[1, :k] = (norm * torch.sin(theta)).to(W.dtype)
    return W
