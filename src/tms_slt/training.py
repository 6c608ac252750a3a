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

from tms_slt.config import TRAIN_BACKENDS, ExperimentConfig
from tms_slt.data import Batch, Schedule, TMSDistribution, as_dense, sample_instances
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


#: Elements of a checkpoint's evaluation sample made dense at once (torch path).
_EVAL_CHUNK_ELEMENTS = 1 << 22


def _make_optimizer(config: ExperimentConfig, params: list[Tensor]) -> torch.optim.Optimizer:
    t = config.train
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def resolve_backend(backend: str, config: ExperimentConfig) -> str:
    """ "native" or "torch" for this run; see `train(backend=...)`.

    Raises:
        ValueError: an unknown backend, or "native" where the fused kernel cannot run
            (one line: why not).
    """
    if backend not in TRAIN_BACKENDS:
        raise ValueError(f"backend must be one of {TRAIN_BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch"
    from tms_slt import training_native

    reason = training_native.unsupported(torch.device(config.device), config.model.activation)
    if reason is None:
        try:
            training_native.load_library(config.model.n_hidden, config.data.n_features)
        except training_native.NativeUnavailableError as err:
            reason = str(err).splitlines()[0]
    if reason is None:
        return "native"
    if backend == "native":
        raise ValueError(f"train backend='native' is unavailable: {reason}")
    return "torch"


@dataclass(frozen=True)
class _Run:
    """What both backends share: the settings, the random stream, D_n and the schedule."""

    config: ExperimentConfig
    generator: torch.Generator
    q0: TMSDistribution
    schedule: Schedule | None
    data: Tensor | None  # (instance, n_train, n), or None online
    checkpoints: Tensor

    @property
    def index_dtype(self) -> torch.dtype:
        """Of the minibatch row indices: torch draws the same stream into any integer type
        (for fewer than 2³² rows), and the fused kernel reads the narrowest one fastest."""
        return (
            torch.int16 if self.data is not None and self.data.shape[-2] <= 1 << 15 else torch.int32
        )

    @property
    def full_batch(self) -> bool:
        return self.data is not None and self.config.train.batch_size >= self.data.shape[-2]

    def q(self, step: int) -> TMSDistribution:
        return self.schedule(step) if self.schedule is not None else self.q0

    def eval_data(self, q: TMSDistribution) -> Batch:
        """The sample the checkpoint loss is measured on: D_n, or a fresh draw from q."""
        if self.data is not None:
            return self.data
        return sample_instances(q, self.config.train.num_instances, EVAL_SAMPLES, self.generator)

    def online_batch(self, step: int) -> Batch:
        t = self.config.train
        return sample_instances(self.q(step), t.num_instances, t.batch_size, self.generator)

    def diverged(self, first_bad: Tensor) -> TrainingDivergedError:
        """The error for per-instance first non-finite steps (0: finite throughout)."""
        step = int(first_bad[first_bad > 0].min())
        bad = torch.nonzero(first_bad == step).flatten().tolist()
        return TrainingDivergedError(
            f"instances {bad} diverged at step {step} (non-finite loss); lower train.lr"
        )


def train(
    config: ExperimentConfig,
    *,
    generator: torch.Generator | None = None,
    distribution: TMSDistribution | Schedule | None = None,
    progress: bool = True,
    backend: str | None = None,
) -> Trajectory:
    """Train `config.train.num_instances` TMS models together and keep checkpoints.

    All instances are one leading dimension of W (instance, m, n); each has its own
    initialization and its own training set D_n. Each step minimizes
    L(W, b) = (1/B) Σ_s Σ_i I_i (x_si − act(WᵀW x_s + b)_i)² on a minibatch of B samples
    (rows of D_n drawn with replacement, or fresh samples of q online; sparse draws of
    q at large n, see `data.sample_instances`) with `torch.optim`'s SGD, Adam or AdamW.

    Args:
        config: the resolved experiment configuration.
        generator: source of all randomness (init, data, batches); defaults to
            a new generator seeded with `config.seed`.
        distribution: overrides `config.data` (and `config.schedule`): a TMSDistribution
            (possibly with per-instance sparsity/importance), or a schedule `step -> q_t`
            for a true distribution that changes during training (online only). None:
            `config.data`, moved by the config's [[schedule]] ramps if it has any.
        progress: show a progress bar.
        backend: "native" (the fused C kernel of `training_native`: CPU, float32, one C
            loop per instance), "torch" (autograd and torch.optim, any device), or "auto"
            (native where it applies, else torch). None: `config.train.backend`. Both draw
            the same random numbers in the same order, so with the same generator they
            give the same trajectory up to float rounding.

    Raises:
        TrainingDivergedError: an instance's loss became non-finite.
        ValueError: backend "native" where the kernel cannot run.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(config.seed)
    t, m = config.train, config.model
    if distribution is None and config.schedule:  # [[schedule]] in the config: q moves
        from tms_slt.schedules import DistributionSchedule

        distribution = DistributionSchedule.from_config(config)
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
    chosen = resolve_backend(t.backend if backend is None else backend, config)
    I, n_train = t.num_instances, config.data.n_train
    params = init_params((I,), m.n_hidden, n, generator=generator, scale=m.init_scale)
    data = as_dense(sample_instances(q0, I, n_train, generator), I) if n_train else None
    run = _Run(
        config,
        generator,
        q0,
        distribution if scheduled else None,
        data,
        log_checkpoint_steps(t.num_steps, t.num_checkpoints),
    )
    bar = tqdm(total=t.num_steps, desc="training", disable=not progress, mininterval=0.5)
    with bar:
        if chosen == "native":
            from tms_slt.training_native import train_native

            W, b, loss = train_native(run, params.W, params.b, bar)
        else:
            W, b, loss = _train_torch(run, params.W, params.b, bar)
    return Trajectory(
        steps=run.checkpoints,
        W=W,
        b=b,
        loss=loss,
        train_data=data,
        importance=q0.importance.clone(),
        activation=m.activation,
        swish_sharpness=m.swish_sharpness,
        config=config,
    )


def _eval_loss(W: Tensor, b: Tensor, x: Batch, importance: Tensor, activation) -> Tensor:
    """reconstruction_loss on a checkpoint's evaluation sample; a sparse one is made dense
    a slice of samples at a time, so it never occupies instance × 10⁴ × n floats."""
    if isinstance(x, Tensor):
        return reconstruction_loss(W, b, x.to(W.device), importance, activation)
    num, per_sample = x.num_samples, math.prod(x.shape[:-2]) * x.shape[-1]
    chunk = max(1, _EVAL_CHUNK_ELEMENTS // per_sample)
    total = torch.zeros(W.shape[:-2], device=W.device)
    for start in range(0, num, chunk):
        stop = min(num, start + chunk)
        part = x.rows(start, stop).to(W.device)
        total += reconstruction_loss(W, b, part, importance, activation) * (stop - start)
    return total / num


def _train_torch(run: _Run, W0: Tensor, b0: Tensor, bar) -> tuple[Tensor, Tensor, Tensor]:
    """The reference loop: autograd through `reconstruction_loss`, then torch.optim."""
    config = run.config
    t, m, device = config.train, config.model, torch.device(config.device)
    I = t.num_instances
    activation = get_activation(m.activation, sharpness=m.swish_sharpness)
    W = W0.to(device).requires_grad_(True)
    b = b0.to(device).requires_grad_(m.bias)
    optimizer = _make_optimizer(config, [W, b] if m.bias else [W])
    data = None if run.data is None else run.data.to(device)
    rows = torch.arange(I, device=device).unsqueeze(-1)
    n_checkpoints = len(run.checkpoints)
    saved_W = torch.empty(n_checkpoints, *W.shape, device=device)
    saved_b = torch.empty(n_checkpoints, *b.shape, device=device)
    saved_loss = torch.empty(n_checkpoints, I, device=device)
    # The first non-finite step of each instance, kept on the device: checked at
    # checkpoints, so no step waits for the device to report.
    first_bad = torch.zeros(I, dtype=torch.long, device=device)
    eval_data = run.eval_data(run.q0)
    importance = run.q0.importance.to(device)

    def save(k: int, q: TMSDistribution) -> None:
        nonlocal eval_data
        if run.schedule is not None:
            eval_data = run.eval_data(q)
        with torch.no_grad():
            saved_loss[k] = _eval_loss(W, b, eval_data, importance, activation)
            saved_W[k], saved_b[k] = W, b

    save(0, run.q0)
    k = 1
    checkpoint_at = run.checkpoints.tolist()
    for step in range(1, t.num_steps + 1):
        q = run.q(step)
        if run.schedule is not None:
            importance = q.importance.to(device)
        if run.full_batch:
            x = data
        elif data is not None:
            idx = torch.randint(
                data.shape[-2], (I, t.batch_size), generator=run.generator, dtype=run.index_dtype
            )
            x = data[rows, idx.to(device, torch.long)]
        else:
            x = as_dense(run.online_batch(step), I).to(device)
        loss = reconstruction_loss(W, b, x, importance, activation)
        first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss), step, first_bad)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        if step == checkpoint_at[k]:
            if first_bad.any():
                raise run.diverged(first_bad.cpu())
            save(k, q)
            k += 1
            bar.update(step - checkpoint_at[k - 2])
    return saved_W.cpu(), saved_b.cpu(), saved_loss.cpu()


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
