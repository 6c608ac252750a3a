"""The TMS autoencoder x' = act(WᵀWx + b), batched over leading dimensions.

W has shape (..., m, n) and b shape (..., n); `...` may be (instance,) during
training or (checkpoint, instance, chain) during sampling. Inputs x have shape
(..., batch, n) with leading dims broadcasting against the parameters'.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor


@dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity with its derivative (for analytic gradients)."""

    name: str
    fn: Callable[[Tensor], Tensor]
    derivative: Callable[[Tensor], Tensor]
    sharpness: float | None = None  # swish's γ; None for activations without one

    def __call__(self, x: Tensor) -> Tensor:
        return self.fn(x)


class TMSParams(NamedTuple):
    """Parameters of a batch of TMS models: W (..., m, n), b (..., n)."""

    W: Tensor
    b: Tensor


def _swish(sharpness: float) -> Activation:
    def fn(x: Tensor) -> Tensor:
        return x * torch.sigmoid(sharpness * x)

    def derivative(x: Tensor) -> Tensor:
        s = torch.sigmoid(sharpness * x)
        return s + sharpness * x * s * (1 - s)

    return Activation("swish", fn, derivative, sharpness)


def _gelu_derivative(x: Tensor) -> Tensor:
    cdf = 0.5 * (1 + torch.erf(x * 0.5**0.5))
    pdf = torch.exp(-0.5 * x * x) * (2 * math.pi) ** -0.5
    return cdf + x * pdf


_ACTIVATIONS: dict[str, Callable[[float], Activation]] = {
    "linear": lambda _: Activation("linear", lambda x: x, torch.ones_like),
    "relu": lambda _: Activation("relu", torch.relu, lambda x: (x > 0).to(x.dtype)),
    "swish": _swish,
    "gelu": lambda _: Activation("gelu", torch.nn.functional.gelu, _gelu_derivative),
}


def get_activation(name: str, *, sharpness: float = 1.0) -> Activation:
    """Look up an activation by name: linear, relu, swish, gelu.

    `swish` is x·σ(γx) with sharpness γ (`sharpness`); it tends to ReLU as γ → ∞.
    """
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(_ACTIVATIONS)}")
    if not sharpness > 0:
        raise ValueError(f"swish sharpness must be positive, got {sharpness}")
    return _ACTIVATIONS[name](sharpness)


def activation_names() -> tuple[str, ...]:
    return tuple(_ACTIVATIONS)


def forward(
    W: Tensor, b: Tensor, x: Tensor, activation: Callable[[Tensor], Tensor] = torch.relu
) -> Tensor:
    """x' = act(WᵀW x + b) for x of shape (..., batch, n); returns (..., batch, n)."""
    h = x @ W.transpose(-1, -2)  # (..., batch, m)
    return activation(h @ W + b.unsqueeze(-2))


def reconstruction_loss(
    W: Tensor,
    b: Tensor,
    x: Tensor,
    importance: Tensor | None = None,
    activation: Callable[[Tensor], Tensor] = torch.relu,
) -> Tensor:
    """L(W, b) = mean over the batch of Σ_i I_i (x_i − x'_i)², shape (...).

    Elhage et al. 2022, eq. for the importance-weighted reconstruction loss; with
    I ≡ 1 and one active feature this is Chen et al. 2023's TMS loss.
    """
    err = (x - forward(W, b, x, activation)) ** 2
    if importance is not None:
        err = err * importance.unsqueeze(-2)
    return err.sum(-1).mean(-1)


def init_params(
    batch_shape: tuple[int, ...],
    n_hidden: int,
    n_features: int,
    *,
    generator: torch.Generator | None = None,
    scale: float = 1.0,
    device: torch.device | str | None = None,
) -> TMSParams:
    """Xavier-normal W (std = scale·sqrt(2/(m+n))) and zero b, as in Chen et al.'s code."""
    std = scale * (2.0 / (n_hidden + n_features)) ** 0.5
    W = std * torch.randn((*batch_shape, n_hidden, n_features), generator=generator, device=device)
    b = torch.zeros((*batch_shape, n_features), device=device)
    return TMSParams(W, b)


def loss_and_grad(
    W: Tensor,
    b: Tensor,
    x: Tensor,
    importance: Tensor | None,
    activation: Activation,
) -> tuple[Tensor, Tensor, Tensor]:
    """The reconstruction loss and its exact gradients (dL/dW, dL/db), batched.

    With h = W x, z = Wᵀh + b, e = act(z) − x and G = (2/B) I ⊙ e ⊙ act'(z):
    dL/dW = h Gᵀ + (W G) xᵀ summed over the batch, dL/db = Σ_batch G.
    Written with the batch as the last axis so every contraction is a matmul;
    about twice as fast as autograd through `reconstruction_loss` for the
    thousands of tiny models the LLC sampler advances at once.
    """
    # einsum, not matmul, for the contractions with x: when x has fewer leading dims than
    # W (one minibatch shared by many checkpoints), matmul would copy x once per
    # checkpoint, while einsum folds the extra dims into one GEMM.
    h = torch.einsum("...mn,...bn->...mb", W, x)  # (..., m, B)
    z = W.transpose(-1, -2) @ h + b.unsqueeze(-1)
    e = activation(z) - x.transpose(-1, -2)
    weighted = e if importance is None else e * importance.unsqueeze(-1)
    loss = (weighted * e).sum(-2).mean(-1)
    G = (2.0 / x.shape[-2]) * weighted * activation.derivative(z)
    dW = h @ G.transpose(-1, -2) + torch.einsum("...mb,...bn->...mn", W @ G, x)
    return loss, dW, G.sum(-1)
