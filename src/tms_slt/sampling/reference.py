"""The reference sampler: devinterp's SGLD optimizer on one TMS nn.Module per chain.

This is the only module that imports devinterp (the optional `[reference]` extra). It is
what a devinterp 2.x user writes: a module per chain, `SGMCMC.sgld(...)` (Lau et al. 2023,
arXiv 2308.12108, with localization), a minibatch each step, `loss.backward()`,
`optimizer.step(noise_generator=...)`. devinterp's update is

    w ← w − (ε/2)(nβ ∇L_m(w) + γ(w − w₀) + δ w);   w ← w + √ε · N(0, 1),

the noise drawn per parameter, in parameter order, with
`torch.normal(0, 1, size=p.shape, generator=noise_generator)`. `devinterp_noise`
reproduces that stream so the batched kernel can be fed identical noise.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from tms_slt.models import get_activation, reconstruction_loss
from tms_slt.sampling.llc import LLCResult, compute_llc


class TMSModule(nn.Module):
    """One TMS model x' = act(WᵀWx + b) as an nn.Module (W: (m, n), b: (n,))."""

    def __init__(
        self,
        W: Tensor,
        b: Tensor,
        importance: Tensor | None = None,
        activation: str = "relu",
        swish_sharpness: float = 1.0,
    ) -> None:
        super().__init__()
        self.W = nn.Parameter(W.detach().clone())
        self.b = nn.Parameter(b.detach().clone())
        self.importance = importance
        self.activation = get_activation(activation, sharpness=swish_sharpness)

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction loss of a batch x (B, n), a scalar."""
        return reconstruction_loss(self.W, self.b, x, self.importance, self.activation)


def _sgld_optimizer(
    params: Sequence[nn.Parameter],
    *,
    step_size: float,
    nbeta: float,
    localization: float,
    weight_decay: float,
) -> torch.optim.Optimizer:
    from devinterp.optim.sgmcmc import SGMCMC

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # devinterp warns about nbeta == 1
        return SGMCMC.sgld(
            params,
            lr=step_size,
            nbeta=nbeta,
            localization=localization,
            weight_decay=weight_decay,
        )


def devinterp_noise(shapes: Sequence[torch.Size], generator: torch.Generator) -> tuple[Tensor, ...]:
    """One step's noise exactly as devinterp's SGMCMC.step draws it (parameter order)."""
    return tuple(torch.normal(0.0, 1.0, size=tuple(s), generator=generator) for s in shapes)


def devinterp_sgld_chain(
    W: Tensor,
    b: Tensor,
    batches: Tensor | Callable[[int], Tensor],
    num_steps: int,
    *,
    step_size: float,
    nbeta: float,
    localization: float = 0.0,
    weight_decay: float = 0.0,
    importance: Tensor | None = None,
    activation: str = "relu",
    noise_generator: torch.Generator,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Run devinterp's SGLD on one TMS module for `num_steps` steps.

    Args:
        W, b: the start (and localization centre) of the chain, (m, n) and (n,).
        batches: a (num_steps, B, n) tensor, or `t -> batch` called once per step.
        noise_generator: passed to `optimizer.step(noise_generator=...)`.

    Returns:
        The minibatch loss before every step (num_steps,) and the final (W, b).
    """
    module = TMSModule(W, b, importance, activation)
    optimizer = _sgld_optimizer(
        [module.W, module.b],
        step_size=step_size,
        nbeta=nbeta,
        localization=localization,
        weight_decay=weight_decay,
    )
    losses = torch.empty(num_steps)
    for t in range(num_steps):
        x = batches[t] if isinstance(batches, Tensor) else batches(t)
        optimizer.zero_grad()
        loss = module(x)
        loss.backward()
        optimizer.step(noise_generator=noise_generator)
        losses[t] = loss.detach()
    return losses, (module.W.detach().clone(), module.b.detach().clone())


def devinterp_llc(
    W: Tensor,
    b: Tensor,
    data: Tensor,
    *,
    num_chains: int,
    num_draws: int,
    num_burnin: int,
    batch_size: int,
    step_size: float,
    nbeta: float,
    localization: float,
    importance: Tensor | None = None,
    activation: str = "relu",
    generator: torch.Generator,
) -> LLCResult:
    """λ̂ from devinterp's sampler, looping over leading indices and chains in Python.

    W (..., m, n), b (..., n) and data (N, n) shared by every leading index; each step a
    fresh minibatch of `batch_size` rows (with replacement) from `generator`, which also
    drives devinterp's noise. The result has the same layout as `estimate_llc`'s.
    """
    lead = W.shape[:-2]
    W_flat, b_flat = W.reshape(-1, *W.shape[-2:]), b.reshape(-1, b.shape[-1])
    N = data.shape[0]
    traces = torch.empty(W_flat.shape[0], num_chains, num_draws)
    for i in range(W_flat.shape[0]):
        for c in range(num_chains):
            traces[i, c], _ = devinterp_sgld_chain(
                W_flat[i],
                b_flat[i],
                lambda _t: data[torch.randint(N, (batch_size,), generator=generator)],
                num_draws,
                step_size=step_size,
                nbeta=nbeta,
                localization=localization,
                importance=importance,
                activation=activation,
                noise_generator=generator,
            )
    with torch.no_grad():
        init_loss = reconstruction_loss(W, b, data, importance, get_activation(activation))
    return compute_llc(
        traces.reshape(*lead, num_chains, num_draws),
        init_loss,
        nbeta,
        num_burnin=num_burnin,
        num_params=W.shape[-2] * W.shape[-1] + W.shape[-1],
    )
