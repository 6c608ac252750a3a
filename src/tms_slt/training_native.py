"""The fused C training kernel (`tms_train.c`): build, load, and run training steps with it.

`NativeTrainer` advances every instance of a batched TMS training run by many steps per
call: the loss L = (1/B) Σ_s Σ_i I_i (act(z_si) − x_si)², z = WᵀWx + b, its analytic
gradient and the `torch.optim` update (SGD with momentum, Adam, AdamW) in one C loop per
instance. The minibatches (row indices, or online samples) are drawn by the caller with
torch, in the torch path's order, so `training.train(backend="native")` and
`backend="torch"` give the same trajectory up to float rounding.

The build is the SGLD kernel's (`native_build`): compiled on first use with `$CC`
(default `cc`) for this machine into the same cache directory, keyed by source, flags,
compiler and CPU; small models (m·n ≤ `MAX_SPECIALIZED_WEIGHTS`) get a build specialized
to their shape. Without a compiler `available()` is False and `train(backend="auto")`
uses the torch path. Calls release the GIL, so shards of instances run on threads.
"""

from __future__ import annotations

import ctypes
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from tms_slt.data import SparseSample, TMSDistribution, as_dense
from tms_slt.native_build import (
    NativeUnavailableError,
    build_library,
    loads,
    shape_defines,
)

if TYPE_CHECKING:
    from tqdm.auto import tqdm

    from tms_slt.training import _Run

__all__ = [
    "Gather",
    "NativeTrainer",
    "NativeUnavailableError",
    "Rows",
    "available",
    "load_library",
    "train_native",
    "unsupported",
]

_SOURCE = "tms_train.c"
_ACTIVATIONS = {"linear": 0, "relu": 1, "swish": 2, "gelu": 3}
_OPTIMIZERS = {"sgd": 0, "adam": 1, "adamw": 2}
_GATHER, _ROWS, _SPARSE = 0, 1, 2
#: Elements of pre-drawn minibatches per call into the kernel.
CHUNK_ELEMENTS = 1 << 22
#: torch.optim's Adam defaults, which `training` uses.
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


class _Spec(ctypes.Structure):
    _fields_ = [
        *((name, ctypes.c_int64) for name in (
            "m", "n", "batch", "num_instances", "num_steps", "step0", "data_stride",
            "step_stride", "imp_stride", "imp_step_stride", "sparse_instances",
        )),
        *((name, ctypes.c_double) for name in (
            "lr", "weight_decay", "momentum", "beta1", "beta2", "eps",
        )),
        *((name, ctypes.c_int32) for name in (
            "activation", "optimizer", "train_bias", "batch_mode", "eval_only", "index_bytes",
        )),
        ("sharpness", ctypes.c_float),
    ]  # fmt: skip


def load_library(m: int | None = None, n: int | None = None) -> ctypes.CDLL:
    """Compile (once per machine, source and shape) and load the training kernel.

    Raises:
        NativeUnavailableError: no C compiler, or compiling or loading failed.
    """
    lib = build_library("tms_slt", _SOURCE, shape_defines(m, n))
    lib.tms_train_steps.restype = ctypes.c_int
    lib.tms_train_steps.argtypes = [
        ctypes.POINTER(_Spec),
        ctypes.c_int64,
        ctypes.c_int64,
        *([ctypes.c_void_p] * 14),
    ]
    return lib


def available() -> bool:
    """Whether the training kernel can be built and loaded on this machine."""
    return loads(load_library)


def unsupported(device: torch.device, activation: str) -> str | None:
    """Why the fused kernel cannot train this run, or None if it can."""
    if device.type != "cpu":
        return f"the fused kernel runs on the CPU, not {device.type}; use backend='torch'"
    if torch.get_default_dtype() != torch.float32:
        return "the fused kernel computes in float32 (torch's default dtype is not)"
    if activation not in _ACTIVATIONS:
        return f"the fused kernel has no activation {activation!r}"
    return None


@dataclass(frozen=True)
class Gather:
    """Minibatches of stored rows: step t, instance i uses data[i, idx[t, i]].

    data: (instance or 1, N, n); idx: (steps, instance, B), int16 or int32 (`index_dtype`).
    """

    data: Tensor
    idx: Tensor


@dataclass(frozen=True)
class Rows:
    """Minibatches given whole: x (steps or 1, instance or 1, B, n); a leading 1 repeats
    the same rows every step (full-batch training) or for every instance."""

    x: Tensor


def _stride(t: Tensor, dim: int) -> int:
    return 0 if t.shape[dim] == 1 else t.stride(dim)


def _csr(samples: list[SparseSample]) -> tuple[Tensor, Tensor, Tensor]:
    """One CSR (ptr, feature, value) over the samples of several sparse batches in order."""
    ptrs, features, values, offset = [], [], [], 0
    for sample in samples:
        ptr, feature = sample.csr()
        ptrs.append(ptr[:-1] + offset)
        features.append(feature)
        values.append(sample.value)
        offset += len(sample.value)
    ptrs.append(torch.tensor([offset]))
    return torch.cat(ptrs), torch.cat(features), torch.cat(values).float()


class NativeTrainer:
    """Parameters, optimizer state and the compiled kernel of one batched training run.

    Args:
        W, b: (instance, m, n) and (instance, n) initial parameters (copied).
        optimizer, lr, weight_decay, momentum: as `config.TrainConfig`, with torch.optim's
            semantics (Adam's betas and eps at their defaults).
        activation, sharpness: the model's activation and swish's γ.
        train_bias: whether b is trained (else it stays at its initial value).
        num_threads: threads over instances (default `torch.get_num_threads()`).
    """

    def __init__(
        self,
        W: Tensor,
        b: Tensor,
        *,
        optimizer: str,
        lr: float,
        weight_decay: float,
        momentum: float,
        activation: str,
        sharpness: float,
        train_bias: bool,
        num_threads: int | None = None,
    ) -> None:
        self.W = W.detach().to(torch.float32).clone().contiguous()
        self.b = b.detach().to(torch.float32).clone().contiguous()
        I, m, n = self.W.shape
        self.lib = load_library(m, n)
        moments = 2 if optimizer in ("adam", "adamw") else 1
        self.state = [torch.zeros_like(self.W) for _ in range(moments)]
        self.state_b = [torch.zeros_like(self.b) for _ in range(moments)]
        while len(self.state) < 2:  # the kernel takes two slots; SGD uses one
            self.state.append(self.state[0])
            self.state_b.append(self.state_b[0])
        self.diverged = torch.zeros(I, dtype=torch.int64)
        self.spec = _Spec(
            m=m,
            n=n,
            num_instances=I,
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            beta1=ADAM_BETAS[0],
            beta2=ADAM_BETAS[1],
            eps=ADAM_EPS,
            activation=_ACTIVATIONS[activation],
            optimizer=_OPTIMIZERS[optimizer],
            train_bias=int(train_bias),
            sharpness=sharpness,
        )
        self.threads = max(1, min(num_threads or torch.get_num_threads(), I))

    def steps(
        self, step0: int, batches: Gather | Rows | list[SparseSample], importance: Tensor
    ) -> Tensor:
        """Take steps step0 + 1 .. step0 + T, T = the batches' steps; returns `diverged`:
        (instance,) int64, the first step whose loss was not finite (0: none). An instance
        that diverged takes no further steps.

        importance: (n,), (instance, n) or (T, instance, n).
        """
        spec = _Spec.from_buffer_copy(self.spec)
        spec.step0 = step0
        self._run(spec, batches, importance, eval_only=False)
        return self.diverged

    def loss(self, data: Tensor | SparseSample, importance: Tensor) -> Tensor:
        """(instance,) the loss of the current parameters on data (instance or 1, N, n)."""
        out = torch.full((self.W.shape[0],), float("nan"))
        batch = [data] if isinstance(data, SparseSample) else Rows(data.unsqueeze(0))
        spec = _Spec.from_buffer_copy(self.spec)
        self._run(spec, batch, importance, eval_only=True, loss_out=out)
        return out

    def _run(
        self,
        spec: _Spec,
        batches: Gather | Rows | list[SparseSample],
        importance: Tensor,
        *,
        eval_only: bool,
        loss_out: Tensor | None = None,
    ) -> None:
        """One kernel call over every instance (sharded over threads); the tensors it reads
        are locals here, alive until it returns."""
        I, n = self.b.shape
        data = idx = ptr = feature = value = None
        if isinstance(batches, Gather):
            data = batches.data.float()
            idx = batches.idx.contiguous()
            if idx.dtype not in (torch.int16, torch.int32):
                raise TypeError(f"row indices must be int16 or int32, got {idx.dtype}")
            spec.index_bytes = idx.element_size()
            spec.batch_mode, spec.num_steps, spec.batch = _GATHER, idx.shape[0], idx.shape[-1]
            spec.data_stride = _stride(data, 0)
            if data[0].stride() != (n, 1):
                data = data.contiguous()
                spec.data_stride = _stride(data, 0)
        elif isinstance(batches, Rows):
            data = batches.x.float()
            if data[0, 0].stride() != (n, 1):
                data = data.contiguous()
            spec.batch_mode, spec.num_steps, spec.batch = _ROWS, data.shape[0], data.shape[-2]
            spec.step_stride, spec.data_stride = _stride(data, 0), _stride(data, 1)
        else:
            ptr, feature, value = _csr(batches)
            spec.batch_mode, spec.num_steps = _SPARSE, len(batches)
            spec.batch = batches[0].num_samples
            spec.sparse_instances = batches[0].shape[0]
        imp = importance.to(torch.float32)
        imp = imp.expand(*imp.shape[:-2], I, n) if imp.ndim >= 2 else imp.expand(I, n)
        imp = imp.contiguous()
        spec.imp_stride = n
        spec.imp_step_stride = I * n if imp.ndim == 3 else 0
        spec.eval_only = int(eval_only)
        ptrs = [
            None if t is None else t.data_ptr()
            for t in (
                self.W,
                self.b,
                *self.state,
                *self.state_b,
                imp,
                data,
                idx,
                ptr,
                feature,
                value,
                self.diverged,
                loss_out,
            )
        ]

        def shard(bounds: tuple[int, int]) -> int:
            return self.lib.tms_train_steps(ctypes.byref(spec), *bounds, *ptrs)

        bounds = [(int(c[0]), len(c)) for c in torch.arange(I).tensor_split(self.threads)]
        if self.threads == 1:
            codes = [shard(bounds[0])]
        else:
            with ThreadPoolExecutor(max_workers=self.threads) as pool:
                codes = list(pool.map(shard, bounds))
        if any(codes):
            raise MemoryError("the fused training kernel could not allocate its workspace")


def train_native(run: _Run, W0: Tensor, b0: Tensor, bar: tqdm) -> tuple[Tensor, Tensor, Tensor]:
    """`training.train`'s loop on the fused kernel: the torch loop's random numbers in its
    order (`run` draws them), a chunk of steps per call (indices (T, instance, B) in one
    draw: the same stream as T draws of (instance, B)); returns the checkpoints' W, b and
    loss. Raises `run.diverged(...)` after the chunk in which an instance diverged."""
    config = run.config
    t, m = config.train, config.model
    I = t.num_instances
    trainer = NativeTrainer(
        W0,
        b0,
        optimizer=t.optimizer,
        lr=t.lr,
        weight_decay=t.weight_decay,
        momentum=t.momentum,
        activation=m.activation,
        sharpness=m.swish_sharpness,
        train_bias=m.bias,
    )
    n_checkpoints = len(run.checkpoints)
    saved_W = torch.empty(n_checkpoints, *trainer.W.shape)
    saved_b = torch.empty(n_checkpoints, *trainer.b.shape)
    saved_loss = torch.empty(n_checkpoints, I)
    eval_data = run.eval_data(run.q0)
    per_step = I * t.batch_size * (1 if run.data is not None else config.data.n_features)
    chunk = max(1, min(4096, CHUNK_ELEMENTS // per_step))

    def save(k: int, q: TMSDistribution) -> None:
        nonlocal eval_data
        if run.schedule is not None:
            eval_data = run.eval_data(q)
        saved_loss[k] = trainer.loss(eval_data, q.importance)
        saved_W[k], saved_b[k] = trainer.W, trainer.b

    save(0, run.q0)
    steps = run.checkpoints.tolist()
    for k in range(1, n_checkpoints):
        for start in range(steps[k - 1], steps[k], chunk):
            count = min(chunk, steps[k] - start)
            importance = run.q0.importance
            if run.full_batch:
                batches = Rows(run.data.unsqueeze(0).expand(count, *run.data.shape))
            elif run.data is not None:
                shape = (count, I, t.batch_size)
                idx = torch.randint(
                    run.data.shape[-2], shape, generator=run.generator, dtype=run.index_dtype
                )
                batches = Gather(run.data, idx)
            else:
                steps_here = range(start + 1, start + count + 1)
                drawn = [run.online_batch(step) for step in steps_here]
                if run.schedule is not None:
                    importance = torch.stack(
                        [run.q(s).importance.expand(I, -1) for s in steps_here]
                    )
                if all(isinstance(x, SparseSample) for x in drawn):
                    batches = drawn
                else:
                    batches = Rows(torch.stack([as_dense(x, I) for x in drawn]))
            diverged = trainer.steps(start, batches, importance)
            if diverged.any():
                raise run.diverged(diverged)
            bar.update(count)
        save(k, run.q(steps[k]))
    return saved_W, saved_b, saved_loss
