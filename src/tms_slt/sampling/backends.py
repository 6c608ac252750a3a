"""How the SGLD steps run: the backends (fused C kernel, eager or compiled torch) and the
one entry point that picks among them, `sample`."""

from __future__ import annotations

import torch
from torch import Tensor

from tms_slt.config import LLC_BACKENDS
from tms_slt.sampling.chains import Traces, run_chains
from tms_slt.sampling.problems import Problem
from tms_slt.sampling.sgld import SGLD

BACKENDS = LLC_BACKENDS


def resolve_backend(backend: str, problem: Problem, kernel: SGLD) -> str:
    """ "native", "torch" or "compile" for this problem; see `estimate_llc(backend=...)`.

    Raises:
        ValueError: an unknown backend, or "native" where the fused kernel cannot run
            (the reason: not a TMS target, not CPU/float32, no C compiler, ...).
    """
    from tms_slt.sampling import native

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend in ("torch", "compile"):
        return backend
    reason = native.unsupported(problem.tms, kernel)
    if reason is None:
        try:
            native.load_library(*problem.tms.W.shape[-2:])
        except native.NativeUnavailableError as err:
            reason = str(err)
    if reason is None:
        return "native"
    if backend == "native":
        raise ValueError(f"backend='native' is unavailable: {reason}")
    return "torch"


def sample(
    problem: Problem,
    kernel: SGLD,
    num_draws: int,
    generator: torch.Generator,
    progress: bool = False,
    *,
    backend: str = "auto",
    keep_params_every: int | None = None,
    start: tuple[Tensor, ...] | None = None,
) -> Traces:
    """Run the chains of `problem` with `kernel` on the chosen backend (`resolve_backend`),
    from `start` (a previous run's `Traces.last`) when given, else from w*."""
    chosen = resolve_backend(backend, problem, kernel)
    if chosen == "native":
        from tms_slt.sampling.native import run_tms_chains

        return run_tms_chains(
            problem.tms,
            kernel,
            num_draws,
            generator,
            progress,
            keep_params_every=keep_params_every,
            start=start,
        )
    control = None
    if problem.anchor_batch_loss is not None:
        offset = problem.init_loss.unsqueeze(-1)

        def control(batch):
            return problem.anchor_batch_loss(batch) - offset

    return run_chains(
        kernel,
        problem.params,
        problem.sample_batch,
        num_draws,
        generator,
        progress,
        compile=chosen == "compile",
        keep_params_every=keep_params_every,
        control=control,
        start=start,
    )
