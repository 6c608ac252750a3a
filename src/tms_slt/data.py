"""True distributions q(x) of toy models of superposition, and schedules q_t.

Elhage et al. 2022 ("Toy Models of Superposition"): each feature x_i is 0 with
probability S_i (its sparsity), otherwise U[0, 1], independently; the loss
weights feature i by its importance I_i = r^i.

Chen et al. 2023 (arXiv 2310.06301), the high-sparsity limit: exactly one
feature (generally exactly k) is active per sample, chosen uniformly, with
value U[0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tms_slt.config import DataConfig


def _as_tensor(value: float | Sequence[float] | Tensor, name: str) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.get_default_dtype())
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return t


class TMSDistribution:
    """Sparse synthetic features x ∈ [0, 1]^n.

    Args:
        n_features: n, the number of features.
        sparsity: S, probability that a feature is 0. A scalar, one value per
            feature (shape (n,)), or a batch of either (shape (..., n) or (..., 1))
            to give each instance its own distribution. Leave None with
            `active_features`.
        importance_decay: r in I_i = r^i (i = 0..n-1), Elhage et al. 2022.
        active_features: k for the exactly-k-active variant (Chen et al. 2023
            use k = 1). Mutually exclusive with `sparsity`.
        importance: explicit importances of shape (..., n), overriding the decay.

    `sample(num, generator=g)` returns a tensor of shape (*batch_shape, num, n).
    """

    def __init__(
        self,
        n_features: int,
        sparsity: float | Sequence[float] | Tensor | None = None,
        importance_decay: float = 1.0,
        *,
        active_features: int | None = None,
        importance: Sequence[float] | Tensor | None = None,
    ) -> None:
        if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features <= 0:
            raise ValueError(f"n_features must be a positive integer, got {n_features!r}")
        if (sparsity is None) == (active_features is None):
            raise ValueError("give exactly one of sparsity and active_features")
        self.n_features = n_features
        self.active_features = active_features
        self.sparsity: Tensor | None = None
        if sparsity is not None:
            s = _as_tensor(sparsity, "sparsity")
            if ((s < 0) | (s > 1)).any():
                raise ValueError(f"sparsity must lie in [0, 1], got {sparsity!r}")
            if s.ndim >= 1 and s.shape[-1] not in (1, n_features):
                raise ValueError(
                    f"sparsity's last dimension must be 1 or n_features={n_features}, "
                    f"got shape {tuple(s.shape)}"
                )
            self.sparsity = s
        if active_features is not None and not 1 <= active_features <= n_features:
            raise ValueError(f"active_features must be in [1, {n_features}], got {active_features}")
        if importance is None:
            if not importance_decay > 0:
                raise ValueError(f"importance_decay must be positive, got {importance_decay!r}")
            importance = importance_decay ** torch.arange(n_features, dtype=torch.float64)
        imp = _as_tensor(importance, "importance")
        if imp.ndim == 0 or imp.shape[-1] != n_features or (imp < 0).any():
            raise ValueError(
                f"importance must be non-negative with last dimension {n_features}, "
                f"got shape {tuple(imp.shape)}"
            )
        self.importance = imp
        self.importance_decay = importance_decay

    @classmethod
    def from_config(cls, config: DataConfig) -> TMSDistribution:
        return cls(
            config.n_features,
            config.sparsity,
            config.importance_decay,
            active_features=config.active_features,
        )

    @property
    def batch_shape(self) -> torch.Size:
        """Leading shape of per-instance distributions (empty for a single one)."""
        shapes = [self.importance.shape[:-1]]
        if self.sparsity is not None and self.sparsity.ndim >= 1:
            shapes.append(self.sparsity.shape[:-1])
        # numpy's rule, which is torch's: torch.broadcast_shapes first imports sympy (0.7 s).
        try:
            return torch.Size(np.broadcast_shapes(*shapes))
        except ValueError as err:  # torch raises RuntimeError for shapes that do not broadcast
            shown = [tuple(s) for s in shapes]
            raise RuntimeError(f"batch shapes {shown} do not broadcast") from err

    @property
    def feature_density(self) -> Tensor:
        """Probability that each feature is nonzero, shape (*batch_shape, n)."""
        if self.sparsity is None:
            k = self.active_features
            return torch.full((*self.batch_shape, self.n_features), k / self.n_features)
        return (1.0 - self.sparsity).expand(*self.batch_shape, self.n_features)

    def sample(
        self,
        num: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw `num` samples, shape (*batch_shape, num, n)."""
        if num < 0:
            raise ValueError(f"num must be non-negative, got {num}")
        shape = (*self.batch_shape, num, self.n_features)
        values = torch.rand(shape, generator=generator, device=device)
        if self.sparsity is None:
            # k distinct active features per sample: the k smallest of n uniform keys.
            keys = torch.rand(shape, generator=generator, device=device)
            idx = keys.topk(self.active_features, dim=-1, largest=False).indices
            mask = torch.zeros(shape, dtype=torch.bool, device=device).scatter_(-1, idx, True)
        else:
            s = self.sparsity.to(device)
            if s.ndim >= 1:
                s = s.unsqueeze(-2)  # broadcast over the sample dimension
            mask = torch.rand(shape, generator=generator, device=device) >= s
        return values * mask

    def sample_sparse(self, num: int, *, generator: torch.Generator | None = None) -> SparseSample:
        """Draw `num` samples as their nonzero entries only: the distribution of `sample`.

        Each feature is active independently with probability p = 1 − S, so the positions
        of the active entries along a sequence of such trials are the partial sums of
        Geometric(p) gaps, drawn by inversion, G = ⌊log V / log(1 − p)⌋ + 1 with V uniform
        on (0, 1] (P(G > k) = (1 − p)^k); the values are U[0, 1). This draws about p·n
        numbers per sample instead of 2n. The trials run along (sample, feature) when p is
        the same for every feature of a distribution, else along the samples of each
        feature. Independent-feature distributions only (`sparsity` given).
        """
        if self.sparsity is None:
            raise ValueError(
                "sample_sparse needs independent features (sparsity), not active_features"
            )
        if num < 0:
            raise ValueError(f"num must be non-negative, got {num}")
        n = self.n_features
        p = self.feature_density.to(torch.float64).reshape(-1, n)  # (distribution, n)
        shape = (*self.batch_shape, num, n)
        if bool((p == p[:, :1]).all()):  # trials along (sample, feature): already sorted
            row, pos = _bernoulli_positions(p[:, 0], num * n, generator)
            index = row * (num * n) + pos
        else:  # trials along the samples of each (distribution, feature), then sorted
            row, pos = _bernoulli_positions(p.reshape(-1), num, generator)
            index = ((row // n) * num + pos) * n + row % n
            index = index.sort().values
        value = torch.rand(index.shape, generator=generator)
        return SparseSample(shape, index, value)

    def __repr__(self) -> str:
        mode = (
            f"active_features={self.active_features}"
            if self.sparsity is None
            else f"sparsity={self.sparsity.tolist()}"
        )
        return (
            f"TMSDistribution(n_features={self.n_features}, {mode}, "
            f"importance_decay={self.importance_decay})"
        )


def _bernoulli_positions(
    p: Tensor, length: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """(row, position) of the successes in `len(p)` rows of `length` Bernoulli(p_row) trials,
    sorted by row, then position: geometric gaps by inversion, in float64.

    A rectangle of gaps (rows × draws) covers the expected count plus a wide margin; the
    rare rows it does not cover draw another, so the result is exact, not truncated.
    """
    rows = torch.nonzero(p > 0).flatten()  # p = 0: no successes, and log(1 − p) = 0
    log_q = torch.log1p(-p[rows])  # −inf where p = 1: every gap is 1
    start = torch.zeros(len(rows), dtype=torch.float64)
    found: list[tuple[Tensor, Tensor]] = []
    while len(rows):
        mean = length * float(p[rows].max())
        draws = min(length + 1, math.ceil(mean + 6.0 * math.sqrt(mean) + 8.0))
        u = torch.rand(len(rows), draws, dtype=torch.float64, generator=generator)
        gaps = torch.floor(torch.log1p(-u) / log_q.unsqueeze(-1)) + 1.0
        pos = start.unsqueeze(-1) + torch.cumsum(gaps, dim=-1) - 1.0
        hit = pos < length
        found.append((rows.unsqueeze(-1).expand_as(pos)[hit], pos[hit].long()))
        more = pos[:, -1] < length  # every draw was a success inside the row: draw again
        rows, log_q, start = rows[more], log_q[more], pos[more, -1] + 1.0
    if not found:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    row = torch.cat([r for r, _ in found])
    pos = torch.cat([q for _, q in found])
    if len(found) > 1:  # rows that drew again: restore (row, position) order
        order = (row * length + pos).argsort()
        row, pos = row[order], pos[order]
    return row, pos


@dataclass(frozen=True)
class SparseSample:
    """Samples of shape `shape` = (*batch, num, n) by their nonzero entries.

    Attributes:
        shape: the dense shape.
        index: (nnz,) ascending flat indices into the dense tensor (row-major).
        value: (nnz,) the entries there.
    """

    shape: tuple[int, ...]
    index: Tensor
    value: Tensor

    @property
    def num_samples(self) -> int:
        """Samples per distribution (`shape[-2]`)."""
        return self.shape[-2]

    def dense(self) -> Tensor:
        """The samples as a dense tensor of shape `shape`."""
        out = torch.zeros(math.prod(self.shape), dtype=self.value.dtype)
        return out.index_put_((self.index,), self.value).view(self.shape)

    def rows(self, start: int, stop: int) -> Tensor:
        """Dense samples start .. stop of every distribution, shape (*batch, stop − start, n)."""
        n, num = self.shape[-1], self.shape[-2]
        sample = (self.index // n) % num
        keep = (sample >= start) & (sample < stop)
        index = self.index[keep]
        index = (index // (num * n)) * ((stop - start) * n) + index % (num * n) - start * n
        shape = (*self.shape[:-2], stop - start, n)
        out = torch.zeros(math.prod(shape), dtype=self.value.dtype)
        return out.index_put_((index,), self.value[keep]).view(shape)

    def csr(self) -> tuple[Tensor, Tensor]:
        """(ptr, feature): sample r's entries are ptr[r] .. ptr[r + 1] of `value`, with r
        the flat sample index over (*batch, num) and `feature` their feature."""
        n = self.shape[-1]
        counts = torch.bincount(self.index // n, minlength=math.prod(self.shape[:-1]))
        ptr = torch.zeros(len(counts) + 1, dtype=torch.long)
        torch.cumsum(counts, 0, out=ptr[1:])
        return ptr, self.index % n


#: `sample_instances` draws sparsely (`TMSDistribution.sample_sparse`: only the active
#: features) for independent features from this many features on, at densities 1 − S up
#: to `SPARSE_MAX_DENSITY`: there it costs a few percent of a dense draw.
SPARSE_MIN_FEATURES = 64
SPARSE_MAX_DENSITY = 0.1

Batch = Tensor | SparseSample


def prefers_sparse(dist: TMSDistribution) -> bool:
    """Whether `sample_instances` draws q sparsely."""
    return (
        dist.sparsity is not None
        and dist.n_features >= SPARSE_MIN_FEATURES
        and float(dist.feature_density.max()) <= SPARSE_MAX_DENSITY
    )


def sample_instances(
    dist: TMSDistribution, num_instances: int, num: int, generator: torch.Generator | None
) -> Batch:
    """`num` samples of q for each of `num_instances` instances: shape (instance, num, n),
    or (1, num, n) for one draw shared by all instances (a distribution of batch shape
    (1,)); a `SparseSample` where that is cheaper (`prefers_sparse`), else dense.

    Raises:
        ValueError: the distribution's batch shape is neither (), (1,) nor (instance,).
    """
    n = dist.n_features
    sparse = prefers_sparse(dist)
    if len(dist.batch_shape) == 0:
        count = num_instances * num
        if sparse:
            s = dist.sample_sparse(count, generator=generator)
            return SparseSample((num_instances, num, n), s.index, s.value)
        return dist.sample(count, generator=generator).reshape(num_instances, num, n)
    if tuple(dist.batch_shape) not in ((num_instances,), (1,)):
        raise ValueError(
            f"distribution batch shape {tuple(dist.batch_shape)} does not match "
            f"train.num_instances={num_instances}"
        )
    if sparse:
        return dist.sample_sparse(num, generator=generator)
    return dist.sample(num, generator=generator)


def as_dense(x: Batch, num_instances: int) -> Tensor:
    """A batch as a dense (instance, num, n) tensor (a shared draw expanded, not copied)."""
    x = x.dense() if isinstance(x, SparseSample) else x
    return x.expand(num_instances, *x.shape[1:])


Schedule = Callable[[int], TMSDistribution]


@dataclass(frozen=True)
class SparsityRamp:
    """A true distribution that changes during training: q_t with sparsity moving
    linearly (in t) from `start` to `end` between steps `begin` and `finish`.

    Models a deeper layer whose input statistics drift while it learns; the
    detector uses `change_points()` to tell schedule-driven from learning-driven
    transitions.
    """

    n_features: int
    start: float
    end: float
    begin: int
    finish: int
    importance_decay: float = 1.0

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"SparsityRamp.{name} must be in [0, 1], got {v}")
        if not 0 <= self.begin <= self.finish:
            raise ValueError(f"need 0 <= begin <= finish, got {self.begin}, {self.finish}")

    def sparsity_at(self, step: int) -> float:
        if step <= self.begin:
            return self.start
        if step >= self.finish:
            return self.end
        frac = (step - self.begin) / max(self.finish - self.begin, 1)
        return self.start + frac * (self.end - self.start)

    def __call__(self, step: int) -> TMSDistribution:
        return TMSDistribution(self.n_features, self.sparsity_at(step), self.importance_decay)

    def change_points(self) -> tuple[int, int]:
        return (self.begin, self.finish)
