"""MCMC convergence statistics over many traces at once: R-hat, bulk/tail ESS, MCSE.

Every function takes draws shaped (..., chain, draw) and returns one value per leading
index (...), all leading indices in one pass of array operations (batched FFTs, Geyer's
truncation with masks and a cumulative minimum): no Python loop over traces. The values
are those of ArviZ 0.23's `az.rhat` (method "rank"), `az.ess` (methods "bulk", "tail" and
"mean") and `az.mcse` (method "mean"), which loop over the leading indices in Python;
`tests/unit/test_mcmc_stats.py` holds them to ArviZ's within 1e-8 relative (they differ
by rounding only, ~1e-14: the chains' power spectra are averaged before one inverse FFT
per trace), including ArviZ's choices:

* NaN wherever a trace holds a NaN (ArviZ's `not_valid`), or has fewer than 4 draws;
  R-hat also needs 2 chains;
* chains are split in halves (the first ⌊D/2⌋ and the last ⌊D/2⌋ draws: the middle draw
  of an odd D is dropped), giving M = 2C chains of N = ⌊D/2⌋ draws;
* a trace that is constant to within float resolution has ESS M·N.

Reference: Vehtari, Gelman, Simpson, Carpenter, Bürkner (2021), "Rank-normalization,
folding, and localization: an improved R-hat for assessing convergence of MCMC",
Bayesian Analysis 16(2), 667-718 (arXiv 1903.08008).

Formulas, for M chains θ_mn of N draws:

* rank normalization: z = Φ⁻¹((r − 3/8) / (MN + 1/4)), r the rank of θ_mn among all MN
  draws (ties: the average rank, `scipy.stats.rankdata`);
* R-hat of z: W = mean_m s_m² (within-chain variances, ddof 1), B = N·var_m(z̄_m) (ddof
  1), R̂ = √((B/W + N − 1)/N); the rank-normalized split R̂ is the larger of R̂ of z of
  the split chains (bulk) and R̂ of z of |θ − median θ| (folded, for the tails);
* ESS: ρ̂_t = 1 − (W − mean_m γ̂_{m,t}) / var⁺ with γ̂ the chains' autocovariances (FFT,
  biased, 1/N), W = mean_m γ̂_{m,0}·N/(N−1), var⁺ = W(N−1)/N + var_m(θ̄_m) (ddof 1); Geyer's
  initial positive sequence: the pair sums P_k = ρ̂_{2k} + ρ̂_{2k+1} (ρ̂_0 = 1) are kept
  while positive, then made monotone (P_k ← min(P_k, P_{k−1})); τ̂ = −1 + 2 Σ_k P_k +
  ρ̂_{2K} (the next even lag, where positive), at least 1/log₁₀(MN); ESS = MN/τ̂ (so at
  most MN·log₁₀(MN));
* bulk ESS: ESS of z; tail ESS: the smaller of the ESS of the indicators θ ≤ q̂_0.05 and
  θ ≤ q̂_0.95 (q̂: quantiles of all draws, type 7 as `scipy.stats.mstats.mquantiles`);
* MCSE of the mean: sd(θ) / √ESS_mean, sd over all draws (ddof 1) and ESS_mean the ESS of
  the split (not rank-normalized) chains.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property, lru_cache

import numpy as np
import scipy.fft
from scipy import special
from scipy.fftpack import next_fast_len

__all__ = ["convergence", "ess_bulk", "ess_mean", "ess_tail", "mcse_mean", "rhat"]

#: Fewer draws per chain than this give NaN (ArviZ's `min_draws`).
MIN_DRAWS = 4

#: At most this many draws are processed at once, so that a block's working arrays stay
#: near the caches (the FFT needs a few times its memory); the leading indices are taken
#: in blocks of that size.
BLOCK_VALUES = 1 << 18

#: Blocks processed at once, in threads (numpy and scipy.fft release the GIL); None: the
#: machine's cores, at most 4. The values do not depend on it.
THREADS: int | None = None

#: The two quantiles whose indicators set the tail ESS.
TAIL_PROBS = (0.05, 0.95)


def _blocked(
    fn: Callable[[np.ndarray], dict[str, np.ndarray]],
    x: np.ndarray,
    names: tuple[str, ...],
    min_chains: int,
) -> dict[str, np.ndarray]:
    """Apply `fn` ((B, C, D) traces without NaN -> (B,) arrays) over the leading indices of
    `x` in blocks; NaN where a trace holds a NaN or is too short."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"draws must be shaped (..., chain, draw), got shape {x.shape}")
    lead, (chains, draws) = x.shape[:-2], x.shape[-2:]
    flat = x.reshape(-1, chains, draws)
    out = {name: np.full(flat.shape[0], np.nan) for name in names}
    if chains < min_chains or draws < MIN_DRAWS or flat.shape[0] == 0:
        return {name: v.reshape(lead) for name, v in out.items()}
    valid = np.flatnonzero(~np.isnan(flat).any(axis=(1, 2)))
    step = max(1, BLOCK_VALUES // (chains * draws))
    blocks = [valid[start : start + step] for start in range(0, valid.size, step)]
    threads = min(THREADS or min(4, os.cpu_count() or 1), len(blocks))
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(lambda rows: fn(flat[rows]), blocks))
    else:
        results = [fn(flat[rows]) for rows in blocks]
    for rows, values in zip(blocks, results, strict=True):
        for name, value in values.items():
            out[name][rows] = value
    return {name: v.reshape(lead) for name, v in out.items()}


def split_chains(x: np.ndarray) -> np.ndarray:
    """(..., C, D) -> (..., 2C, ⌊D/2⌋): the first and the last ⌊D/2⌋ draws of each chain as
    chains of their own (ArviZ's `_split_chains`: the middle draw of an odd D is dropped)."""
    half = x.shape[-1] // 2
    return np.concatenate([x[..., :half], x[..., x.shape[-1] - half :]], axis=-2)


@lru_cache(maxsize=8)
def _z_table(size: int) -> np.ndarray:
    """Φ⁻¹((r − 3/8) / (size + 1/4)) for every possible average rank r = 1, 1.5, …, size,
    at index 2r − 2 (ArviZ's `_backtransform_ranks` then `norm.ppf`, which is `ndtri`)."""
    c = 3 / 8
    ranks = (np.arange(2 * size - 1) + 2) / 2
    table = special.ndtri((ranks - c) / (size - 2 * c + 1))
    table.flags.writeable = False  # cached: shared by every call
    return table


def _tie_index(ordered: np.ndarray) -> np.ndarray:
    """2r − 2 for each entry of rows sorted ascending, r its average rank (1-based) among
    the row's entries: 2i at position i, and for a run of equal values at positions
    f…l, f + l (the runs are found among the few tied entries only)."""
    b, n = ordered.shape
    index = np.broadcast_to(2 * np.arange(n), (b, n))
    row, col = np.nonzero(ordered[:, 1:] == ordered[:, :-1])
    if row.size == 0:
        return index
    later = row * n + col + 1  # flat positions equal to the entry before them
    opens = np.ones(later.size, dtype=bool)
    opens[1:] = np.diff(later) != 1  # a run of equal values begins one before
    first = later[opens] - 1
    last = np.append(later[np.flatnonzero(opens)[1:] - 1], later[-1])
    row_start = first - first % n
    size = last - first + 1
    offset = np.arange(size.sum()) - np.repeat(np.cumsum(size) - size, size)
    out = index.reshape(-1).copy()
    out[np.repeat(first, size) + offset] = np.repeat(first + last - 2 * row_start, size)
    return out.reshape(b, n)


def _flat_index(order: np.ndarray) -> np.ndarray:
    """Row-wise indices `order` (B, n) as indices into the flattened (B·n) array."""
    return (order + np.arange(0, order.size, order.shape[-1])[:, None]).reshape(-1)


def _take(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """`take_along_axis(values, order, -1)`, with `index = _flat_index(order)`."""
    return values.reshape(-1)[index].reshape(values.shape)


def _scatter(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The inverse of `_take`: out[i, order[i, j]] = values[i, j]."""
    out = np.empty(values.shape)
    out.reshape(-1)[index] = values.reshape(-1)
    return out


def _z_of_sorted(ordered: np.ndarray, index: np.ndarray) -> np.ndarray:
    """z-scale of rows given sorted (`ordered`), `index` the `_flat_index` of the sort."""
    return _scatter(_z_table(ordered.shape[-1])[_tie_index(ordered)], index)


def z_scale(x: np.ndarray) -> np.ndarray:
    """Rank normalization over the last two axes (no NaN): Φ⁻¹((r − 3/8) / (size + 1/4)),
    r the average rank (ties share it, as `scipy.stats.rankdata`) among all chains' draws
    (Blom 1958's offset 3/8)."""
    flat = np.asarray(x).reshape(-1, x.shape[-2] * x.shape[-1])
    index = _flat_index(np.argsort(flat, axis=-1))
    return _z_of_sorted(_take(flat, index), index).reshape(x.shape)


def _rhat_plain(z: np.ndarray) -> np.ndarray:
    """Gelman-Rubin R̂ = √((B/W + N − 1)/N) of (B, M, N) chains (ArviZ's `_rhat`)."""
    n = z.shape[-1]
    chain_mean = np.mean(z, axis=-1)
    within = np.mean(np.var(z, axis=-1, ddof=1), axis=-1)
    between = n * np.var(chain_mean, axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):  # constant chains: 0/0 -> NaN
        return np.sqrt((between / within + n - 1) / n)


def _sorted_median(ordered: np.ndarray) -> np.ndarray:
    """The median of rows sorted ascending (as `np.median`: the mean of the middle two)."""
    n = ordered.shape[-1]
    if n % 2:
        return ordered[:, n // 2]
    return np.mean(ordered[:, n // 2 - 1 : n // 2 + 1], axis=-1)


def _folded_z(ordered: np.ndarray, index: np.ndarray) -> np.ndarray:
    """z-scale of |θ − median θ| from the sorted θ (`ordered`, `index` its sort's
    `_flat_index`).

    Below the median the folded values fall as θ rises, above it they rise: the lower
    half reversed and the upper half are two sorted runs, which a stable sort (timsort)
    merges in one pass instead of sorting the folded values afresh."""
    half = ordered.shape[-1] // 2
    folded = np.abs(ordered - _sorted_median(ordered)[:, None])
    runs = np.concatenate([folded[:, half - 1 :: -1], folded[:, half:]], axis=1)  # half >= 2
    merge = np.argsort(runs, axis=-1, kind="stable")
    merged = _take(runs, _flat_index(merge))
    source = _flat_index(np.where(merge < half, half - 1 - merge, merge))  # in `ordered`
    return _z_of_sorted(merged, index[source])


def _mean_autocov(x: np.ndarray) -> np.ndarray:
    """(B, M, N) chains -> (B, N): the chains' mean biased autocovariance
    (1/N) Σ_n (x_n − x̄)(x_{n+t} − x̄) at lags 0…N−1, by FFT zero-padded to
    `next_fast_len(2N)` as ArviZ's `autocov`; the chains' power spectra are averaged
    before the inverse FFT (the same sum, one inverse transform per trace)."""
    n = x.shape[-1]
    m = next_fast_len(2 * n)
    padded = np.zeros((*x.shape[:-1], m))
    np.subtract(x, x.mean(-1, keepdims=True), out=padded[..., :n])
    # scipy's FFT gives numpy's values here, faster over a batch of chains.
    spectrum = scipy.fft.rfft(padded, axis=-1, overwrite_x=True)
    del padded
    parts = spectrum.view(np.float64)  # (re, im) pairs
    np.square(parts, out=parts)
    power = parts[..., 0::2]
    power += parts[..., 1::2]  # re² + im²
    cov = np.fft.irfft(np.mean(power, axis=1), n=m, axis=-1)[:, :n]
    cov /= n
    return cov


def _ess(x: np.ndarray) -> np.ndarray:
    """ESS of (B, M, N) chains (ArviZ's `_ess`), Geyer's initial positive and monotone
    sequences done with masks and a cumulative minimum.

    ArviZ's loop reads pair k (lags 2k, 2k + 1; pair 0 is ρ̂_0 = 1 and ρ̂_1) at
    t = 2k − 1 while t < N − 3 and pair k − 1 summed to more than 0, stopping after
    pair K; τ̂ takes pairs 0…K−1 made monotone, and ρ̂_{2K} where it is positive or pair
    K summed to at least 0 (ArviZ stored the pair then), else 0.
    """
    x = np.asarray(x, dtype=float)
    b, chains, n = x.shape
    size = chains * n
    out = np.full(b, np.nan)
    constant = (np.max(x, axis=(1, 2)) - np.min(x, axis=(1, 2))) < np.finfo(float).resolution
    out[constant] = size
    live = ~constant
    if not live.any():
        return out
    x = x[live]
    num_pairs = max(0, -(-(n - 4) // 2))  # pairs k = 1 … num_pairs can be read
    acov = _mean_autocov(x)[:, : 2 * num_pairs + 2]
    mean_var = acov[:, 0] * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if chains > 1:
        var_plus += np.var(np.mean(x, axis=-1), axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (mean_var[:, None] - acov) / var_plus[:, None]
    rho[:, 0] = 1.0
    even = rho[:, 0::2]
    pair = even + rho[:, 1::2]  # pairs k = 0 … num_pairs
    go_on = np.zeros((len(pair), num_pairs + 1), dtype=bool)
    np.greater(pair[:, :num_pairs], 0, out=go_on[:, :num_pairs])
    stop = np.argmin(go_on, axis=1)  # K: the first pair not summing to > 0, or num_pairs
    monotone = np.minimum.accumulate(pair[:, :num_pairs], axis=1)
    kept = np.arange(num_pairs) < stop[:, None]
    rows = np.arange(len(pair))
    last_even, last_pair = even[rows, stop], pair[rows, stop]
    last = np.where((last_even > 0) | (last_pair >= 0), last_even, 0.0)
    tau = -1.0 + 2.0 * np.where(kept, monotone, 0.0).sum(axis=1) + last
    bound = 1 / np.log10(size)
    tau = np.where(bound > tau, bound, tau)  # Python's max(tau, bound), as ArviZ
    ess = size / tau
    ess[np.isnan(rho[:, 1])] = np.nan  # ArviZ: NaN when any stored ρ̂ is NaN
    out[live] = ess
    return out


def _quantile(ordered: np.ndarray, prob: float) -> np.ndarray:
    """The `prob` quantile of rows sorted ascending, type 7 computed as
    `scipy.stats.mstats.mquantiles(alphap=1, betap=1)` does; shaped (B, 1, 1)."""
    n = ordered.shape[-1]
    p = np.atleast_1d(np.asarray(prob))
    aleph = n * p + (1 + p * (1.0 - 1 - 1))
    k = np.floor(aleph.clip(1, n - 1)).astype(int)
    gamma = (aleph - k).clip(0, 1)
    q = (1.0 - gamma) * ordered[:, k - 1] + gamma * ordered[:, k]
    return q[:, :, None]


class _Block:
    """The statistics of (B, C, D) traces without NaN, sharing the split chains, their
    sort and their z-scale between the statistics asked for."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.split = split_chains(x)
        self.flat = self.split.reshape(len(x), -1)

    @cached_property
    def index(self) -> np.ndarray:
        return _flat_index(np.argsort(self.flat, axis=-1))

    @cached_property
    def ordered(self) -> np.ndarray:
        return _take(self.flat, self.index)

    @cached_property
    def z(self) -> np.ndarray:
        return _z_of_sorted(self.ordered, self.index).reshape(self.split.shape)

    def rhat(self) -> np.ndarray:
        bulk = _rhat_plain(self.z)
        tail = _rhat_plain(_folded_z(self.ordered, self.index).reshape(self.split.shape))
        return np.where(tail > bulk, tail, bulk)  # Python's max(bulk, tail), as ArviZ

    def ess_bulk(self) -> np.ndarray:
        return _ess(self.z)

    def ess_tail(self, probs: tuple[float, float] = TAIL_PROBS) -> np.ndarray:
        # An even D splits into all the draws: their sort is the split chains'.
        x = self.x
        ordered = self.ordered if x.shape[-1] % 2 == 0 else np.sort(x.reshape(len(x), -1), -1)
        low, high = (_ess(split_chains(x <= _quantile(ordered, p))) for p in probs)
        return np.where(high < low, high, low)  # Python's min(low, high), as ArviZ

    def ess_mean(self) -> np.ndarray:
        return _ess(self.split)

    def mcse(self) -> np.ndarray:
        sd = np.std(self.x.reshape(len(self.x), -1), axis=-1, ddof=1)
        return sd / np.sqrt(self.ess_mean())


def _statistics(x: np.ndarray, names: tuple[str, ...], min_chains: int) -> dict[str, np.ndarray]:
    def fn(block: np.ndarray) -> dict[str, np.ndarray]:
        stats = _Block(block)
        return {name: getattr(stats, name)() for name in names}

    return _blocked(fn, x, names, min_chains)


def rhat(x: np.ndarray) -> np.ndarray:
    """Rank-normalized split R̂ per leading index (ArviZ's `az.rhat`, method "rank"): the
    larger of the R̂ of the z-scaled split chains and of their z-scaled folded values."""
    return _statistics(x, ("rhat",), min_chains=2)["rhat"]


def ess_bulk(x: np.ndarray) -> np.ndarray:
    """Bulk ESS: the ESS of the rank-normalized split chains (`az.ess`, method "bulk")."""
    return _statistics(x, ("ess_bulk",), min_chains=1)["ess_bulk"]


def ess_tail(x: np.ndarray) -> np.ndarray:
    """Tail ESS: the smaller ESS of the indicators θ ≤ q̂_0.05, θ ≤ q̂_0.95 (`az.ess`,
    method "tail")."""
    return _statistics(x, ("ess_tail",), min_chains=1)["ess_tail"]


def ess_mean(x: np.ndarray) -> np.ndarray:
    """ESS of the split chains themselves (`az.ess`, method "mean")."""
    return _statistics(x, ("ess_mean",), min_chains=1)["ess_mean"]


def mcse_mean(x: np.ndarray) -> np.ndarray:
    """Monte Carlo standard error of the mean, sd / √ESS_mean (`az.mcse`, method "mean")."""
    return _statistics(x, ("mcse",), min_chains=1)["mcse"]


def convergence(x: np.ndarray) -> dict[str, np.ndarray]:
    """R-hat, bulk ESS, tail ESS and MCSE of the mean in one pass (the split chains, their
    sort and ranks shared): (...) arrays named "rhat", "ess_bulk", "ess_tail", "mcse".
    R-hat is NaN with fewer than 2 chains; the others are not."""
    if np.shape(x)[-2:-1] == (1,):
        out = _statistics(x, ("ess_bulk", "ess_tail", "mcse"), min_chains=1)
        return {"rhat": np.full_like(out["mcse"], np.nan), **out}
    return _statistics(x, ("rhat", "ess_bulk", "ess_tail", "mcse"), min_chains=1)
