"""Running SGLD chains on the torch path, and what every backend records.

`Traces` and `draw_noise` are shared with the fused kernel (`sampling.native`), which must
follow the same random stream: the minibatch first, then the noise, every step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tms_slt.sampling.sgld import SGLD, RMSPropState


class Traces(NamedTuple):
    """What `run_chains` records: loss and MALA acceptance each (..., chain, draw);
    `params`, when kept, one (..., chain, kept_draw, *event) tensor per parameter."""

    loss: Tensor
    mala_accept: Tensor | None
    params: tuple[Tensor, ...] | None = None
    #: the chains' state after the last step, each (..., chain, *event): where a
    #: continuation (`run_chains(start=...)`) picks up.
    last: tuple[Tensor, ...] | None = None


def draw_noise(
    params: Sequence[Tensor],
    generator: torch.Generator,
    out: Sequence[Tensor] | None = None,
) -> tuple[Tensor, ...]:
    """Standard normals shaped like `params`, drawn in parameter order from `generator`;
    into `out` (one tensor per parameter, on the generator's device) when given."""
    if out is not None:
        return tuple(
            torch.randn(p.shape, generator=generator, out=o)
            for p, o in zip(params, out, strict=True)
        )
    return tuple(
        torch.randn(p.shape, generator=generator, device=generator.device, dtype=p.dtype).to(
            p.device
        )
        for p in params
    )


def run_chains(
    kernel: SGLD,
    params: tuple[Tensor, ...],
    sample_batch: Callable[[torch.Generator], Any],
    num_draws: int,
    generator: torch.Generator,
    progress: bool = False,
    *,
    compile: bool = False,
    keep_params_every: int | None = None,
    control: Callable[[Any], Tensor] | None = None,
    start: tuple[Tensor, ...] | None = None,
) -> Traces:
    """Run `num_draws` SGLD steps from `params` (also the anchor w*), or from `start`
    (a previous run's `Traces.last`: the same chains continued) localized at `params`.

    With `control` ((batch) -> (..., chain), the anchor's loss on the batch less L_n(w*))
    the loss recorded is L_B(w_t) − (L_B(w*) − L_n(w*)): the same mean, since the minibatch
    B is drawn independently of w_t, and far less variance, since L_B(w_t) and L_B(w*) share
    the batch's noise (a control variate; with a batch of m rows the noise of nβ·L_B alone
    is nβ·sd(ℓ)/√m, often larger than λ itself).

    Each step draws the minibatch, then the noise, from `generator`, in that order.
    With `keep_params_every=k` the parameters after steps k, 2k, … (w_k, w_2k, …, with
    w_0 = w*) are also returned, stacked along a `kept_draw` dim after the chain dim;
    the random stream is unchanged, so the loss trace is the same as without.
    With `compile=True` the tensor part of the step (`SGLD.update`) goes through
    `torch.compile`; batches and noise are still drawn eagerly, so the random
    stream, and hence the trace up to float rounding, is the same.
    A `RMSPropSGLD` kernel's preconditioner state V is carried from step to step (its
    `update` takes and returns it); the random stream is the same as SGLD's.
    """
    state = kernel.init(params if start is None else start, anchor=params)
    update = torch.compile(kernel.update, dynamic=False) if compile else kernel.update
    anchor = state.anchor
    current = state.params
    square_avg = state.square_avg if isinstance(state, RMSPropState) else None
    losses: list[Tensor] = []
    accepts: list[Tensor] = []
    kept: list[tuple[Tensor, ...]] = []
    with torch.no_grad():
        for t in tqdm(range(num_draws), desc="sampling", disable=not progress, mininterval=0.5):
            batch = sample_batch(generator)
            noise = draw_noise(current, generator)
            if square_avg is None:
                current, info = update(current, anchor, batch, noise)
            else:
                current, info, square_avg = update(current, anchor, batch, noise, square_avg)
            losses.append(info.loss if control is None else info.loss - control(batch))
            if info.mala_accept is not None:
                accepts.append(info.mala_accept)
            if keep_params_every is not None and (t + 1) % keep_params_every == 0:
                kept.append(current)  # `update` returns new tensors: no copy needed
    params_trace = None
    if kept:
        params_trace = tuple(
            torch.stack([draw[i] for draw in kept], dim=p.ndim - k)
            for i, (p, k) in enumerate(zip(current, kernel.event_ndims, strict=True))
        )
    return Traces(
        loss=torch.stack(losses, dim=-1),
        mala_accept=torch.stack(accepts, dim=-1) if accepts else None,
        params=params_trace,
        last=current,
    )
