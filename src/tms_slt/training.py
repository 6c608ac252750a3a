"""Batched training of many TMS instances at once, checkpointed on a log schedule."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr
from torch import Tensor
from tqdm.auto import tqdm

from tms_slt.config import ExperimentConfig
from tms_slt.data import Schedule, TMSDistribution
from tms_slt.models import get_activation, init_params, reconstruction_loss

EVAL_SAMPLES = 10_000


class TrainingDivergedError(RuntimeError):
    """Raised when an instance's loss becomes non-finite during training."""


def log_checkpoint_steps(num_steps: int, num_checkpoints: int) -> Tensor:
    """Integer steps 0 and 1..num_steps spaced evenly in log(step).

    Always contains 0 and num_steps; when num_steps is small the rounded log grid
    has repeats, which are dropped, so fewer than `num_checkpoints` may result.
    """
    if num_steps < 1 or num_checkpoints < 2:
        raise ValueError("need num_steps >= 1 and num_checkpoints >= 2")
    grid = torch.logspace(0, math.log10(num_steps), num_checkpoints - 1, dtype=torch.float64)
    steps = torch.cat([torch.zeros(1, dtype=torch.float64), grid.round()])
    steps[-1] = num_steps
    return torch.unique(steps.long())


@dataclass(frozen=True)
class Trajectory:
    """Checkpoints of a batched training run.

    Attributes:
        steps: (checkpoint,) optimizer steps taken before each checkpoint.
        W: (checkpoint, instance, m, n).
        b: (checkpoint, instance, n).
        loss: (checkpoint, instance) loss on the training set D_n (online
            training: on a fixed evaluation sample from q at that step).
        train_data: (instance, n_train, n) the training set D_n, or None online.
        importance: (n,) or (instance, n) feature importances of the loss.
        activation: activation name; `swish_sharpness` its γ when swish.
    """

    steps: Tensor
    W: Tensor
    b: Tensor
    loss: Tensor
    train_data: Tensor | None
    importance: Tensor
    activation: str = "relu"
    swish_sharpness: float = 1.0
    config: ExperimentConfig | None = None

    @property
    def num_instances(self) -> int:
        return self.W.shape[1]

    def take(self, checkpoints: int | slice | list[int]) -> Trajectory:
        """The trajectory restricted to some checkpoints (negative indices count from the end)."""
        index = [checkpoints] if isinstance(checkpoints, int) else checkpoints
        if isinstance(index, list):
            n = len(self.steps)
            bad = [i for i in index if not -n <= i < n]
            if bad:
                raise IndexError(f"checkpoint indices {bad} out of range for {n} checkpoints")
            index = torch.tensor(index) % n
        return dataclasses.replace(
            self,
            steps=self.steps[index],
            W=self.W[index],
            b=self.b[index],
            loss=self.loss[index],
        )

    def to_xarray(self) -> xr.Dataset:
        """Checkpoints and the training set as a Dataset (round-trips via `from_xarray`)."""
        dims = ("checkpoint", "instance")
        data = {
            "loss": (dims, self.loss.double().numpy()),
            "W": ((*dims, "hidden", "feature"), self.W.double().numpy()),
            "b": ((*dims, "feature"), self.b.double().numpy()),
            "importance": (
                ("instance", "feature")[2 - self.importance.ndim :],
                self.importance.double().numpy(),
            ),
        }
        if self.train_data is not None:
            data["train_data"] = (("instance", "sample", "feature"), self.train_data.numpy())
        return xr.Dataset(
            data,
            coords={"checkpoint": self.steps.numpy(), "instance": np.arange(self.num_instances)},
            attrs={"activation": self.activation, "swish_sharpness": self.swish_sharpness},
        )

    @classmethod
    def from_xarray(cls, ds: xr.Dataset, config: ExperimentConfig | None = None) -> Trajectory:
        """Rebuild a Trajectory from `to_xarray()` output (e.g. a run's results.nc)."""
        dtype = torch.get_default_dtype()

        def tensor(name: str) -> Tensor:
            return torch.tensor(ds[name].values, dtype=dtype)

        return cls(
            steps=torch.tensor(ds["checkpoint"].values, dtype=torch.long),
            W=tensor("W"),
            b=tensor("b"),
            loss=tensor("loss"),
            train_data=tensor("train_data") if "train_data" in ds else None,
            importance=tensor("importance"),
            activation=str(ds.attrs.get("activation", "relu")),
            swish_sharpness=float(ds.attrs.get("swish_sharpness", 1.0)),
            config=config,
        )

    def activation_fn(self):
        return get_activation(self.activation, sharpness=self.swish_sharpness)


def _per_instance(dist: TMSDistribution, num_instances: int, num: int, generator) -> Tensor:
    """Samples of shape (instance, num, n): one independent draw per instance."""
    if len(dist.batch_shape) == 0:
        return dist.sample(num_instances * num, generator=generator).reshape(
            num_instances, num, dist.n_features
        )
    if tuple(dist.batch_shape) not in ((num_instances,), (1,)):
        raise ValueError(
            f"distribution batch shape {tuple(dist.batch_shape)} does not match "
            f"train.num_instances={num_instances}"
        )
    x = dist.sample(num, generator=generator)
    return x.expand(num_instances, num, dist.n_features)


def _make_optimizer(config: ExperimentConfig, params: list[Tensor]) -> torch.optim.Optimizer:
    t = config.train
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def train(
    config: ExperimentConfig,
    *,
    generator: torch.Generator | None = None,
    distribution: TMSDistribution | Schedule | None = None,
    progress: bool = True,
) -> Trajectory:
    """Train `config.train.num_instances` TMS models together and keep checkpoints.

    All instances are one leading dimension of W (instance, m, n), so one
    autograd call serves them all; each has its own initialization and its own
    training set D_n. The loss is Σ_i I_i (x_i − x'_i)² averaged over the batch.

    Args:
        config: the resolved experiment configuration.
        generator: source of all randomness (init, data, batches); defaults to
            a new generator seeded with `config.seed`.
        distribution: overrides `config.data`: a TMSDistribution (possibly with
            per-instance sparsity/importance), or a schedule `step -> q_t` for a
            true distribution that changes during training (online only).
        progress: show a progress bar.

    Raises:
        TrainingDivergedError: an instance's loss became non-finite.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(config.seed)
    device = torch.device(config.device)
    t, m = config.train, config.model
    scheduled = callable(distribution) and not isinstance(distribution, TMSDistribution)
    if scheduled and config.data.n_train:
        raise ValueError("a distribution schedule needs online training: set data.n_train = 0")
    q0 = (
        distribution(0) if scheduled else (distribution or TMSDistribution.from_config(config.data))
    )
    n = q0.n_features
    if n != config.data.n_features:
        raise ValueError(
            f"distribution has {n} features but data.n_features={config.data.n_features}"
        )
    I = t.num_instances
    activation = get_activation(m.activation, sharpness=m.swish_sharpness)

    params = init_params((I,), m.n_hidden, n, generator=generator, scale=m.init_scale)
    W = params.W.to(device).requires_grad_(True)
    b = params.b.to(device).requires_grad_(m.bias)
    optimizer = _make_optimizer(config, [W, b] if m.bias else [W])

    n_train = config.data.n_train
    data = _per_instance(q0, I, n_train, generator).to(device) if n_train else None
    eval_data = data if n_train else _per_instance(q0, I, EVAL_SAMPLES, generator).to(device)
    importance = q0.importance.to(device)

    checkpoint_steps = log_checkpoint_steps(t.num_steps, t.num_checkpoints)
    is_checkpoint = torch.zeros(t.num_steps + 1, dtype=torch.bool)
    is_checkpoint[checkpoint_steps] = True
    saved_W, saved_b, saved_loss = [], [], []
    rows = torch.arange(I, device=device).unsqueeze(-1)
    full_batch = bool(n_train) and t.batch_size >= n_train

    def save(q: TMSDistribution) -> None:
        nonlocal eval_data
        if scheduled:
            eval_data = _per_instance(q, I, EVAL_SAMPLES, generator).to(device)
        with torch.no_grad():
            saved_loss.append(reconstruction_loss(W, b, eval_data, importance, activation))
        saved_W.append(W.detach().clone())
        saved_b.append(b.detach().clone())

    q = q0
    save(q)  # step 0
    for step in tqdm(
        range(1, t.num_steps + 1), desc="training", disable=not progress, mininterval=0.5
    ):
        if scheduled:
            q = distribution(step)
            importance = q.importance.to(device)
        if full_batch:
            x = data
        elif n_train:
            idx = torch.randint(n_train, (I, t.batch_size), generator=generator).to(device)
            x = data[rows, idx]
        else:
            x = _per_instance(q, I, t.batch_size, generator).to(device)
        loss = reconstruction_loss(W, b, x, importance, activation)
        if not torch.isfinite(loss).all():
            bad = torch.nonzero(~torch.isfinite(loss)).flatten().tolist()
            raise TrainingDivergedError(
                f"instances {bad} diverged at step {step} (non-finite loss); lower train.lr"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        if is_checkpoint[step]:
            save(q)

    return Trajectory(
        steps=checkpoint_steps,
        W=torch.stack(saved_W),
        b=torch.stack(saved_b),
        loss=torch.stack(saved_loss),
        train_data=data,
        importance=q0.importance.clone(),
        activation=m.activation,
        swish_sharpness=m.swish_sharpness,
        config=config,
    )


def refine_minimum(
    W: Tensor,
    b: Tensor,
    dataset: Tensor,
    *,
    activation: str = "relu",
    importance: Tensor | None = None,
    max_iter: int = 500,
) -> tuple[Tensor, Tensor]:
    """The local minimum of L_n nearest (W, b), for every leading index at once.

    L-BFGS (strong Wolfe) in float64 on Σ_anchors L_n(W_a, b_a): the anchors do not interact,
    so the minimum of the sum is each anchor's minimum. Used to move a critical point of the
    population loss (e.g. a k-gon of `theory.kgon_critical_point`) onto the empirical loss
    before `estimate_llc`, which needs w* at a local minimum of L_n (Lau et al. 2023).

    Args:
        W, b: (..., m, n) and (..., n) starting points.
        dataset: (num_samples, n) or (..., num_samples, n) training set D_n.
    Returns:
        (W*, b*) in W's dtype.
    """
    if W.shape[:-2] != b.shape[:-1] or W.shape[-1] != b.shape[-1]:
        raise ValueError(f"W {tuple(W.shape)} and b {tuple(b.shape)} do not match")
    act = get_activation(activation)
    x = dataset.double()
    imp = None if importance is None else importance.double()
    Wd = W.detach().double().clone().requires_grad_(True)
    bd = b.detach().double().clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [Wd, bd],
        max_iter=max_iter,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = reconstruction_loss(Wd, bd, x, imp, act).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return Wd.detach().to(W.dtype), bd.detach().to(b.dtype)
