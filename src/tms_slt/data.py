"""True distributions q(x) of toy models of superposition, and schedules q_t.

Elhage et al. 2022 ("Toy Models of Superposition"): each feature x_i is 0 with
probability S_i (its sparsity), otherwise U[0, 1], independently; the loss
weights feature i by its importance I_i = r^i.

Chen et al. 2023 (arXiv 2310.06301), the high-sparsity limit: exactly one
feature (generally exactly k) is active per sample, chosen uniformly, with
value U[0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
        return torch.broadcast_shapes(*shapes)

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
