"""How the local posterior answers a change of the true distribution: susceptibilities.

Lau et al. 2023's localized tempered posterior at w*,

    p_θ(w) ∝ exp(−nβ L_θ(w) − (γ/2)‖w − w*‖²),

depends on the true distribution q_θ through the loss L_θ. Differentiating a posterior mean
under the integral gives the fluctuation–dissipation identity behind the susceptibilities of
Baker et al. 2025 ("Structural inference: interpreting small language models with
susceptibilities", the devinterp line of work):

    d/dθ E_θ[φ(w)] = E_θ[∂_θ φ(w)] − nβ Cov_θ(φ(w), ∂_θ L_θ(w)).

Two instances are estimated here from posterior draws (e.g. SGLD's `param_trace`):

* the susceptibility of the loss, χ = −nβ Cov_θ(L_θ(w), ∂_θ L_θ(w)): how strongly the
  posterior's loss fluctuations couple to the change of q;
* the response of the LLC estimator λ̂ = nβ (E_θ[L_θ] − L_θ(w*)) at a fixed anchor,

      dλ̂/dθ = nβ (E_θ[∂_θ L_θ] − ∂_θ L_θ(w*)) + nβ χ.

Each chain gives its own estimate; the mean over chains is reported with the spread over
chains as its standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PosteriorResponse:
    """χ and dλ̂/dθ for every leading index (...), each with its standard error."""

    chi: Tensor
    chi_se: Tensor
    dllc: Tensor
    dllc_se: Tensor


def posterior_response(
    loss: Tensor, dloss: Tensor, dloss_anchor: Tensor, nbeta: float | Tensor
) -> PosteriorResponse:
    """χ = −nβ Cov(L_θ, ∂_θ L_θ) and dλ̂/dθ from posterior draws (module docstring).

    Args:
        loss, dloss: (..., chain, draw) L_θ(w) and ∂_θ L_θ(w) at the draws (burn-in removed).
        dloss_anchor: (...) ∂_θ L_θ(w*) at the anchor.
        nbeta: nβ, a float or a tensor broadcastable to (...).
    """
    if loss.shape != dloss.shape or loss.ndim < 2:
        raise ValueError(
            f"loss and dloss must share a (..., chain, draw) shape, got {tuple(loss.shape)} "
            f"and {tuple(dloss.shape)}"
        )
    chains = loss.shape[-2]
    if chains < 2 or loss.shape[-1] < 2:
        raise ValueError("need at least 2 chains of at least 2 draws for an error bar")
    nb = torch.as_tensor(nbeta, dtype=torch.float64).unsqueeze(-1)  # broadcasts over chains
    L, dL = loss.double(), dloss.double()
    cov = ((L - L.mean(-1, keepdim=True)) * (dL - dL.mean(-1, keepdim=True))).mean(-1)
    chi = -nb * cov  # (..., chain)
    dllc = nb * (dL.mean(-1) - dloss_anchor.double().unsqueeze(-1)) + nb * chi

    def mean_se(x: Tensor) -> tuple[Tensor, Tensor]:
        return x.mean(-1), x.std(-1, correction=1) / math.sqrt(chains)

    (c, c_se), (d, d_se) = mean_se(chi), mean_se(dllc)
    return PosteriorResponse(c, c_se, d, d_se)


def coupled_sparsity_samples(
    n_features: int, num: int, sparsities: Tensor, *, generator: torch.Generator | None = None
) -> Tensor:
    """(len(sparsities), num, n) samples of Elhage et al.'s q_S at each S with common random
    numbers: x_S = u · 1[v ≥ S] for one draw of the values u and keys v (each marginal is
    `TMSDistribution(n, S).sample`). A feature active at a larger S is active at every
    smaller one, so L_{S+δ} − L_{S−δ} on these samples is a low-noise finite difference of
    ∂_S L."""
    s = torch.as_tensor(sparsities, dtype=torch.float32).reshape(-1, 1, 1)
    if ((s < 0) | (s > 1)).any():
        raise ValueError(f"sparsities must lie in [0, 1], got {sparsities!r}")
    values = torch.rand(num, n_features, generator=generator)
    keys = torch.rand(num, n_features, generator=generator)
    return values * (keys >= s)
