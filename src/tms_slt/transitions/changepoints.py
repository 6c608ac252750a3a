"""Change points and critical points of 1-d series, with penalties set by the noise level.

Everything here works on plain numpy arrays ordered along one axis (checkpoint index, which is
the log-step axis for the log-spaced checkpoints of `training.train`, or a sweep grid).

Noise. The noise σ of a series x_t = f(t) + ε_t with smooth or piecewise-constant f is
estimated robustly from second differences: Δ²x_t = x_{t+1} − 2x_t + x_{t−1} has variance 6σ²
under white noise, a smooth trend contributes little and a jump only a pair of outliers, so

    σ̂ = 1.4826 · MAD(Δ²x) / √6

(MAD the median absolute deviation; 1.4826 makes it consistent for a Gaussian).

Penalty. PELT (Killick, Fearnhead & Eckley 2012, "Optimal detection of changepoints with a
linear computational cost", JASA) minimises Σ_segments cost + pen · #changes with the l2 cost
(within-segment sum of squares). With known σ the Schwarz/BIC choice is pen = 2σ² log T
(Yao 1988); we use

    pen = c · σ_eff² · log T,   σ_eff² = σ̂² + (ρ · range(x))²,

with c = PENALTY_FACTOR (set from the measured false-positive rate on white noise, see
tests/statistical/test_detector.py) and a resolution floor ρ = RESOLUTION: steps smaller
than a few per cent of the series' range are not transitions even when the series is
noiseless (a deterministic full-batch loss has σ̂ ≈ 0, and without the floor every
checkpoint of a smooth decline would be a change point).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

#: c in pen = c · σ² · log T (2 is BIC); 4 keeps the false-positive rate on white noise of
#: length 20–200 at a few per cent (measured in tests/statistical/test_detector.py).
PENALTY_FACTOR = 4.0
#: ρ: the smallest step that counts, as a fraction of the series' range.
RESOLUTION = 0.05
#: 1 / Φ⁻¹(3/4): MAD → standard deviation for Gaussian noise.
MAD_SCALE = 1.482602218505602


def _as_series(x: np.ndarray, name: str = "x") -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has non-finite values; drop or interpolate them first")
    return arr


def noise_sigma(x: np.ndarray) -> float:
    """Robust noise level σ̂ = 1.4826 · MAD(Δ²x) / √6 (0.0 for fewer than 3 points)."""
    x = _as_series(x)
    if x.size < 3:
        return 0.0
    d2 = np.diff(x, n=2)
    mad = np.median(np.abs(d2 - np.median(d2)))
    return float(MAD_SCALE * mad / math.sqrt(6.0))


def pelt_penalty(
    x: np.ndarray,
    *,
    sigma: float | None = None,
    penalty_factor: float = PENALTY_FACTOR,
    resolution: float = RESOLUTION,
) -> float:
    """pen = c · (σ² + (ρ·range x)²) · log T, the PELT penalty for the l2 cost (module doc)."""
    x = _as_series(x)
    s = noise_sigma(x) if sigma is None else float(sigma)
    if s < 0 or not math.isfinite(s):
        raise ValueError(f"sigma must be finite and non-negative, got {sigma}")
    spread = float(x.max() - x.min()) if x.size else 0.0
    var = s * s + (resolution * spread) ** 2
    return penalty_factor * var * math.log(max(x.size, 2))


def change_points(
    x: np.ndarray,
    *,
    sigma: float | None = None,
    penalty_factor: float = PENALTY_FACTOR,
    resolution: float = RESOLUTION,
    min_size: int = 2,
) -> list[int]:
    """Indices i where the mean of ``x`` changes between x[i−1] and x[i] (PELT, l2 cost).

    Args:
        x: the series, shape (T,).
        sigma: its noise level; default :func:`noise_sigma`.
        penalty_factor, resolution: c and ρ of :func:`pelt_penalty`.
        min_size: shortest segment, in points.

    Returns:
        Sorted change indices in [1, T−1] (empty for a constant or too short series).
    """
    x = _as_series(x)
    if x.size < 2 * min_size:
        return []
    pen = pelt_penalty(x, sigma=sigma, penalty_factor=penalty_factor, resolution=resolution)
    if pen <= 0.0:  # constant series
        return []
    import ruptures as rpt  # half a second to import: only when detecting

    algo = rpt.Pelt(model="l2", min_size=min_size, jump=1).fit(x.reshape(-1, 1))
    return [int(i) for i in algo.predict(pen=pen)[:-1]]


def segment_means(x: np.ndarray, breaks: list[int]) -> np.ndarray:
    """Mean of each segment between consecutive change indices (len(breaks) + 1 values)."""
    x = _as_series(x)
    edges = [0, *breaks, x.size]
    return np.array([x[a:b].mean() for a, b in itertools.pairwise(edges)])


def smooth(x: np.ndarray, width: float = 1.5) -> np.ndarray:
    """Gaussian kernel smoother with standard deviation ``width`` points (edges renormalised).

    Hoogland et al. 2024 ("Loss landscape degeneracy drives stagewise development in
    transformers") read stage boundaries off a smoothed LLC curve; this is that smoothing on
    the (log-step) checkpoint axis. ``width = 0`` returns a copy.
    """
    x = _as_series(x)
    if width <= 0 or x.size < 2:
        return x.copy()
    t = np.arange(x.size, dtype=np.float64)
    kernel = np.exp(-0.5 * ((t[:, None] - t[None, :]) / width) ** 2)
    return (kernel @ x) / kernel.sum(axis=1)


def critical_points(
    x: np.ndarray,
    *,
    width: float = 1.5,
    sigma: float | None = None,
    min_prominence: float = 3.0,
) -> list[int]:
    """Turning points of the smoothed curve: indices where its slope changes sign.

    Stage boundaries of Hoogland et al. 2024 are critical points of the smoothed LLC curve.
    A turning point counts only when the smoothed curve moves by more than
    ``min_prominence · σ̂`` (σ̂ the noise of the raw series) on both sides before the next
    turning point, so that noise wiggles of a flat curve are not reported.

    Returns:
        Sorted indices of local maxima and minima of ``smooth(x, width)``.
    """
    x = _as_series(x)
    if x.size < 5:
        return []
    s = noise_sigma(x) if sigma is None else float(sigma)
    y = smooth(x, width)
    slope = np.sign(np.diff(y))
    turns = [i for i in range(1, y.size - 1) if slope[i - 1] * slope[i] < 0]
    threshold = min_prominence * max(s, 1e-12)
    keep: list[int] = []
    edges = [0, *turns, y.size - 1]
    for j, i in enumerate(turns, start=1):
        left = abs(y[i] - y[edges[j - 1]])
        right = abs(y[edges[j + 1]] - y[i])
        if left > threshold and right > threshold:
            keep.append(i)
    return keep
