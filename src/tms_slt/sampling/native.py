"""The fused C kernel for TMS SGLD (`tms_sgld.c`): build, load, and run chains with it.

`run_tms_chains` is `chains.run_chains` for TMS targets: the same update (localized,
tempered SGLD with the analytic TMS gradient, optional MALA acceptance, weight decay and
bounding box; or `RMSPropSGLD`'s preconditioned step, its V kept per chain across calls)
and the same random stream (per step: the minibatch indices, then the noise for W, then for
b, all drawn by torch from the caller's generator), so the traces agree with the eager path
up to float rounding. The arithmetic runs in C, each model's intermediates in L1 and the
batch as the SIMD loop; torch only draws the random numbers.

The kernel is compiled on first use for this machine (`native_build`: `$CC`, cached in
`$TMS_SLT_CACHE`); no build step at install time. Without a compiler, `available()` is False
and `estimate_llc(backend="auto")` uses the torch path.

Calls into the library release the GIL, so shards of (dataset, chain) groups run on
`num_threads` Python threads in parallel.
"""

from __future__ import annotations

import ctypes
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tms_slt.native_build import (
    NativeUnavailableError,
    build_library,
    loads,
    shape_defines,
)
from tms_slt.sampling.problems import TMSInputs
from tms_slt.sampling.sgld import SGLD, RMSPropSGLD

__all__ = ["NativeUnavailableError", "available", "load_library", "run_tms_chains", "unsupported"]

_SOURCE = "tms_sgld.c"
_ACTIVATIONS = {"linear": 0, "relu": 1, "swish": 2, "gelu": 3}
#: Draws per call into the kernel: long enough to amortize the Python-side dispatch,
#: short enough that the pre-drawn noise stays small.
CHUNK_DRAWS = 128


class _Spec(ctypes.Structure):
    _fields_ = [
        *((name, ctypes.c_int64) for name in (
            "m", "n", "batch", "rows_per_dataset", "num_datasets", "num_chains", "num_pairs",
            "num_draws", "t_offset", "num_steps",
        )),
        *((name, ctypes.c_int32) for name in (
            "activation", "sample_bias", "mala", "has_box", "rmsprop",
        )),
        *((name, ctypes.c_float) for name in (
            "sharpness", "weight_decay", "box", "alpha", "one_minus_alpha", "stability",
        )),
    ]  # fmt: skip


def load_library(m: int | None = None, n: int | None = None) -> ctypes.CDLL:
    """Compile (once per machine, source and shape) and load the kernel library.

    With the model shape (m hidden, n features) of a small model, the build is
    specialized to it (`native_build.MAX_SPECIALIZED_WEIGHTS`); otherwise it is the generic one.

    Raises:
        NativeUnavailableError: no C compiler, or compiling or loading failed; the
            message carries the compiler's output.
    """
    lib = build_library("tms_slt.sampling", _SOURCE, shape_defines(m, n))
    ptr = ctypes.c_void_p
    lib.tms_sgld_steps.restype = ctypes.c_int
    lib.tms_sgld_steps.argtypes = [
        ctypes.POINTER(_Spec),
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int64,
        *([ptr] * 17),
    ]
    return lib


def available() -> bool:
    """Whether the fused kernel can be built and loaded on this machine."""
    return loads(load_library)


def unsupported(tms: TMSInputs | None, kernel: SGLD) -> str | None:
    """Why the fused kernel cannot run this problem, or None if it can."""
    if tms is None:
        return "the fused kernel handles TMS targets only"
    if tms.W.device.type != "cpu" or tms.data.device.type != "cpu":
        return "the fused kernel runs on the CPU; use the torch path on other devices"
    if {tms.W.dtype, tms.b.dtype, tms.data.dtype} != {torch.float32}:
        return "the fused kernel computes in float32"
    if tms.activation.name not in _ACTIVATIONS:
        return f"the fused kernel has no activation {tms.activation.name!r}"
    if not isinstance(kernel.weight_decay, int | float):
        return "the fused kernel takes a scalar weight decay"
    return None


def _per_pair(value: float | Tensor, pair_shape: tuple[int, ...]) -> Tensor:
    """A coefficient broadcast to (*lead, chain), flattened, float64."""
    t = torch.as_tensor(value, dtype=torch.float64)
    return t.expand(pair_shape).reshape(-1).contiguous()


def _shards(
    num_datasets: int, num_chains: int, num_anchors: int, num_threads: int
) -> list[tuple[int, int, Tensor]]:
    """(dataset, chain, anchors) work items. Anchors are flattened leading indices; anchor a
    uses dataset a mod D (the dataset's dims are a suffix of the leading dims). Groups are
    split until there are a few items per thread, so both cores stay busy."""
    per_dataset = [torch.arange(d, num_anchors, num_datasets) for d in range(num_datasets)]
    groups = num_datasets * num_chains
    pieces = max(1, -(-2 * num_threads // groups))
    out = []
    for d, anchors in enumerate(per_dataset):
        for c in range(num_chains):
            for part in torch.tensor_split(anchors, min(pieces, len(anchors))):
                out.append((d, c, part.contiguous()))
    return out


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def run_tms_chains(
    tms: TMSInputs,
    kernel: SGLD,
    num_draws: int,
    generator: torch.Generator,
    progress: bool = False,
    *,
    keep_params_every: int | None = None,
    num_threads: int | None = None,
    start: tuple[Tensor, ...] | None = None,
):
    """`chains.run_chains` for a TMS problem, on the fused kernel; returns `chains.Traces`.

    Args:
        tms: the problem's `TMSInputs` (`Problem.tms`).
        kernel: supplies ε, nβ, γ (floats or tensors broadcastable to (..., chain)),
            weight decay, bounding box and `mala`, and for a `RMSPropSGLD` α and λ; its
            `loss_and_grad` is not used.
        num_draws, generator, progress, keep_params_every, start: as for
            `chains.run_chains` (`start` (W, b), or (W,) without bias sampling).
        num_threads: threads (default `torch.get_num_threads()`).

    Raises:
        NativeUnavailableError: no compiler, or `unsupported(tms, kernel)` says why not.
    """
    from tms_slt.sampling.chains import Traces, draw_noise

    reason = unsupported(tms, kernel)
    if reason is not None:
        raise NativeUnavailableError(reason)
    *lead, C, m, n = tms.W.shape
    lib = load_library(m, n)
    W = (tms.W if start is None else start[0]).detach().clone().contiguous()
    b = (tms.b if start is None or not tms.sample_bias else start[1]).detach().clone().contiguous()
    W0, b0 = tms.W.detach().contiguous(), tms.b.detach().contiguous()
    pair_shape = (*lead, C)
    P = W.numel() // (m * n)
    A = P // C
    data = tms.data.detach().contiguous()
    N = data.shape[-2]
    D = data[..., 0, 0].numel()
    B = tms.batch_size
    importance = tms.importance.to(torch.float32).expand(*lead, n).contiguous()
    eps = _per_pair(kernel.step_size, pair_shape)
    nbeta = _per_pair(kernel.nbeta, pair_shape)
    gamma = _per_pair(kernel.localization, pair_shape)
    loss = torch.empty(P, num_draws, dtype=torch.float32)
    accept = torch.empty(P, num_draws, dtype=torch.float32) if kernel.mala else None
    rmsprop = isinstance(kernel, RMSPropSGLD)
    # RMSProp's V, one per coordinate of every chain, carried across the chunks
    square_W = torch.zeros_like(W) if rmsprop else None
    square_b = torch.zeros_like(b) if rmsprop else None
    spec = _Spec(
        m=m,
        n=n,
        batch=B,
        rows_per_dataset=N,
        num_datasets=D,
        num_chains=C,
        num_pairs=P,
        num_draws=num_draws,
        activation=_ACTIVATIONS[tms.activation.name],
        sample_bias=int(tms.sample_bias),
        mala=int(kernel.mala),
        has_box=int(kernel.bounding_box is not None),
        rmsprop=int(rmsprop),
        sharpness=float(tms.activation.sharpness or 1.0),
        weight_decay=float(kernel.weight_decay),
        box=float(kernel.bounding_box or 0.0),
        alpha=kernel.alpha if rmsprop else 0.0,
        one_minus_alpha=1.0 - kernel.alpha if rmsprop else 0.0,
        stability=kernel.stability if rmsprop else 0.0,
    )
    chunk = keep_params_every or CHUNK_DRAWS
    sampled = (W, b) if tms.sample_bias else (W,)

    def new_buffers() -> tuple[Tensor, Tensor, Tensor]:
        return (
            torch.empty(chunk, D * C * B, dtype=torch.int64),
            torch.empty(chunk, *W.shape, dtype=torch.float32),
            torch.empty(chunk, *b.shape, dtype=torch.float32),
        )

    def draw(buffers: tuple[Tensor, Tensor, Tensor], steps: int) -> None:
        idx, noise_W, noise_b = buffers
        # Views made once per chunk, not per step: with few anchors (the precision
        # extension) a step's own work is small and the per-step Python overhead sets the time.
        rows = idx.view(idx.shape[0], *tms.index_shape).unbind(0)
        noise = tuple(zip(noise_W.unbind(0), noise_b.unbind(0), strict=True))
        for t in range(steps):  # as `chains.run_chains`: the batch, then the noise
            tms.draw_indices(generator, out=rows[t])
            draw_noise(sampled, generator, out=noise[t][: len(sampled)])

    def run_shard(
        shard: tuple[int, int, Tensor], spec: _Spec, buffers: tuple[Tensor, Tensor, Tensor]
    ) -> int:
        d, c, anchors = shard
        idx, noise_W, noise_b = buffers
        return lib.tms_sgld_steps(
            ctypes.byref(spec),
            c,
            d,
            len(anchors),
            *map(_ptr, (anchors, W, b, W0, b0, importance, eps, nbeta, gamma, data)),
            *map(_ptr, (idx, noise_W, noise_b, loss, accept, square_W, square_b)),
        )

    threads = num_threads or torch.get_num_threads()
    shards = _shards(D, C, A, threads)
    kept: list[tuple[Tensor, ...]] = []
    bar = tqdm(total=num_draws, desc="sampling", disable=not progress, mininterval=0.5)
    starts = list(range(0, num_draws, chunk))
    buffers = (new_buffers(), new_buffers())
    draw(buffers[0], min(chunk, num_draws))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for k, offset in enumerate(starts):
            steps = min(chunk, num_draws - offset)
            chunk_spec = _Spec.from_buffer_copy(spec)
            chunk_spec.t_offset, chunk_spec.num_steps = offset, steps
            futures = [pool.submit(run_shard, s, chunk_spec, buffers[k % 2]) for s in shards]
            if k + 1 < len(starts):  # the next chunk's random numbers, while the kernel runs
                draw(buffers[(k + 1) % 2], min(chunk, num_draws - starts[k + 1]))
            if any(f.result() for f in futures):
                raise MemoryError("the fused SGLD kernel could not allocate its workspace")
            if keep_params_every is not None and steps == chunk:  # after steps k, 2k, …
                kept.append((W.clone(), b.clone()) if tms.sample_bias else (W.clone(),))
            bar.update(steps)
    bar.close()
    params = None
    if kept:
        params = tuple(
            torch.stack([draw[i] for draw in kept], dim=p.ndim - k)
            for i, (p, k) in enumerate(zip(kept[0], kernel.event_ndims, strict=True))
        )
    return Traces(
        loss=loss.view(*pair_shape, num_draws),
        mala_accept=None if accept is None else accept.view(*pair_shape, num_draws),
        params=params,
        last=(W, b) if tms.sample_bias else (W,),
    )
