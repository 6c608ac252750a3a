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
    second_derivative: Callable[[Tensor], Tensor]
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

    def second_derivative(x: Tensor) -> Tensor:
        s = torch.sigmoid(sharpness * x)
        return sharpness * s * (1 - s) * (2 + sharpness * x * (1 - 2 * s))

    return Activation("swish", fn, derivative, second_derivative, sharpness)


def _gelu_derivative(x: Tensor) -> Tensor:
    cdf = 0.5 * (1 + torch.erf(x * 0.5**0.5))
    pdf = torch.exp(-0.5 * x * x) * (2 * math.pi) ** -0.5
    return cdf + x * pdf


def _gelu_second_derivative(x: Tensor) -> Tensor:
    return torch.exp(-0.5 * x * x) * (2 * math.pi) ** -0.5 * (2 - x * x)


_ACTIVATIONS: dict[str, Callable[[float], Activation]] = {
    "linear": lambda _: Activation("linear", lambda x: x, torch.ones_like, torch.zeros_like),
    "relu": lambda _: Activation(
        "relu", torch.relu, lambda x: (x > 0).to(x.dtype), torch.zeros_like
    ),
    "swish": _swish,
    "gelu": lambda _: Activation(
        "gelu", torch.nn.functional.gelu, _gelu_derivative, _gelu_second_derivative
    ),
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


def loss_hessian(
    W: Tensor,
    b: Tensor,
    x: Tensor,
    importance: Tensor | None,
    activation: Activation,
    *,
    with_bias: bool = True,
) -> Tensor:
    """The exact Hessian of `reconstruction_loss` in (vec W, b), shape (..., d, d), with
    d = mn + n (vec W row-major: W[k, l] at k·n + l); without `with_bias` the W block
    alone (b held fixed), d = mn.

    Per row, with h = Wx, z = Wᵀh + b, e = act(z) − x, the loss Σ_i I_i e_i² has
    ∂z_i/∂W_kl = δ_il h_k + W_ki x_l, ∂z_i/∂b_j = δ_ij and ∂²z_i/∂W_kl∂W_k'l' =
    δ_kk'(δ_il x_l' + δ_il' x_l), so with c = 2I(act'(z)² + e·act''(z)) and
    g = 2I·e·act'(z) (means over the rows written ⟨·⟩):

        H[W_kl, W_k'l'] = δ_ll'⟨c_l h_k h_k'⟩ + W_k'l⟨c_l h_k x_l'⟩ + W_kl'⟨c_l' h_k' x_l⟩
                          + Σ_i W_ki W_k'i ⟨c_i x_l x_l'⟩ + δ_kk'(⟨g_l x_l'⟩ + ⟨g_l' x_l⟩),
        H[W_kl, b_j]    = δ_jl⟨c_j h_k⟩ + W_kj⟨c_j x_l⟩,    H[b_j, b_j'] = δ_jj'⟨c_j⟩.

    Every term is a contraction over the rows, so the cost is rows·n·(m + n)² per point,
    against d autograd passes for the double-backward Hessian.
    """
    m, n = W.shape[-2:]
    rows = x.shape[-2]
    h = torch.einsum("...mn,...bn->...bm", W, x)  # (..., B, m)
    z = h @ W + b.unsqueeze(-2)  # (..., B, n)
    e = activation(z) - x
    weight = 2.0 if importance is None else 2.0 * importance.unsqueeze(-2)
    d1 = activation.derivative(z)
    c = weight * (d1 * d1 + e * activation.second_derivative(z)) / rows
    g = weight * e * d1 / rows
    # Row contractions as GEMMs over the rows. x enters unexpanded, so anchors sharing a
    # training set fold into one GEMM against it; x⊗x does not depend on the anchor.
    ch_ = (c.unsqueeze(-1) * h.unsqueeze(-2)).flatten(-2)  # (..., B, n·m): c_l h_k
    hh = torch.einsum("...bq,...bk->...qk", ch_, h).unflatten(-2, (n, m))  # ⟨c_l h_k h_k'⟩
    hx = torch.einsum("...bq,...bj->...qj", ch_, x).unflatten(-2, (n, m))  # ⟨c_l h_k x_l'⟩
    x2 = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2)  # (..., B, n·n): x_l x_l'
    xx = torch.einsum("...bi,...bq->...iq", c, x2).unflatten(-1, (n, n))  # ⟨c_i x_l x_l'⟩
    gx = torch.einsum("...bl,...bj->...lj", g, x)  # ⟨g_l x_l'⟩
    eye_n = torch.eye(n, dtype=W.dtype, device=W.device)
    eye_m = torch.eye(m, dtype=W.dtype, device=W.device)
    # (..., k, l, k', l') blocks, each term of the formula above in order
    ww = torch.einsum("...lkj,lp->...kljp", hh, eye_n)
    ww = ww + torch.einsum("...jl,...lkp->...kljp", W, hx)
    ww = ww + torch.einsum("...kp,...pjl->...kljp", W, hx)
    ww = ww + torch.einsum("...ki,...ji,...ilp->...kljp", W, W, xx)
    ww = ww + torch.einsum("kj,...lp->...kljp", eye_m, gx + gx.transpose(-1, -2))
    lead = ww.shape[:-4]
    ww = ww.reshape(*lead, m * n, m * n)
    if not with_bias:
        return ww
    ch = c.sum(-2)  # ⟨c_j⟩
    wb = torch.einsum("...jk,jl->...klj", torch.einsum("...bj,...bk->...jk", c, h), eye_n)
    wb = wb + torch.einsum("...kj,...jl->...klj", W, torch.einsum("...bj,...bl->...jl", c, x))
    wb = wb.reshape(*lead, m * n, n)
    bb = torch.diag_embed(ch.expand(*lead, n))
    top = torch.cat([ww, wb], dim=-1)
    bottom = torch.cat([wb.transpose(-1, -2), bb], dim=-1)
    return torch.cat([top, bottom], dim=-2)
