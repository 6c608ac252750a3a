"""Replica exchange over nβ: posterior samples of a TMS at many sample sizes at once.

The tempered posterior at inverse temperature nβ (Watanabe 2009; Chen et al. 2023 §4 for the
TMS with a standard normal prior φ),

    p_nβ(w) ∝ exp(−nβ L_N(w)) φ(w),   φ = N(0, δ⁻¹ I),

concentrates on the k-gon phase of least free energy F ≈ nβ L_k + λ_k log nβ + c_k. At small
nβ an SGLD chain crosses between the basins of the k-gons; at nβ ≳ 10³ it stays in the basin it
fell into, and the fraction of chains per basin measures where random starts land, not the
posterior. Replica exchange (Swendsen and Wang 1986; Geyer 1991) fixes this: a ladder of
nβ_1 < … < nβ_G, R chains at each, SGLD within rounds of `steps_per_round` steps, and between
rounds neighbouring rungs j, j+1 swap states with the Metropolis probability

    min(1, exp((nβ_j − nβ_{j+1}) (L_N(w_j) − L_N(w_{j+1})))),

L_N the full-data loss (the prior is the same at every rung and cancels). Every rung then
samples its own p_nβ, and basins are reached through the hot rungs. The round trips of the
walkers between the coldest and hottest rung say whether that happened (`round_trips`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tms_slt.models import get_activation, reconstruction_loss
from tms_slt.sampling.backends import sample
from tms_slt.sampling.problems import tms_problem
from tms_slt.sampling.sgld import SGLD

#: ε·nβ·h_max at each rung for the default step size ε = STEP_SCALE/nβ: 0.1 for the c = 6
#: k-gons, whose largest Hessian eigenvalue is ≈ 1.25 (`theory.kgon_llc_report`).
STEP_SCALE = 0.08


@dataclass(frozen=True)
class TemperedSamples:
    """Kept draws of every rung, whichever walker held them, and the swap record.

    Attributes:
        nbeta: (G,) the ladder, increasing.
        W, b: (G, R, kept, m, n) and (G, R, kept, n): draws at each rung.
        loss: (G, R, rounds) full-data loss L_N at the end of each round.
        swap_rate: (G − 1,) accepted fraction of proposed swaps between rungs j and j + 1.
        walker: (rounds + 1, G, R) which walker (index into the G·R starts) sits at each
            rung and column after each round (row 0: the start).
    """

    nbeta: Tensor
    W: Tensor
    b: Tensor
    loss: Tensor
    swap_rate: Tensor
    walker: Tensor

    def round_trips(self) -> np.ndarray:
        """(G·R,) completed trips coldest → hottest → coldest rung of every walker."""
        rung = np.empty((self.walker.shape[0], self.walker[0].numel()), dtype=np.int64)
        G = self.walker.shape[1]
        for t, w in enumerate(self.walker.numpy()):
            rung[t, w.ravel()] = np.repeat(np.arange(G), w.shape[1])
        trips = np.zeros(rung.shape[1], dtype=np.int64)
        for k in range(rung.shape[1]):
            last, seen_cold = None, False  # the last end visited; been at the cold end yet
            for r in rung[:, k]:
                end = "cold" if r == G - 1 else "hot" if r == 0 else None
                if end == "cold":
                    trips[k] += int(last == "hot" and seen_cold)
                    seen_cold = True
                if end is not None:
                    last = end
        return trips


def parallel_tempering(
    W: Tensor,
    b: Tensor,
    dataset: Tensor,
    nbeta: Tensor | list[float],
    *,
    num_rounds: int,
    steps_per_round: int,
    keep_every: int | None = None,
    step_size: Tensor | float | None = None,
    weight_decay: float = 1.0,
    batch_size: int = 500,
    activation: str = "relu",
    backend: str = "auto",
    generator: torch.Generator | None = None,
) -> TemperedSamples:
    """Replica-exchange SGLD from (W, b) on the ladder `nbeta` (see the module docstring).

    Args:
        W, b: (G, R, m, n) and (G, R, n) starts, R walkers per rung (e.g. `init_params`).
        dataset: (N, n) training set; L_N is its mean loss.
        nbeta: (G,) increasing inverse temperatures nβ.
        num_rounds, steps_per_round: SGLD steps between swap attempts, and how many rounds.
        keep_every: keep a draw every this many steps (must divide `steps_per_round`;
            default `steps_per_round`, one per round).
        step_size: ε per rung (G,) or one float; default STEP_SCALE/nβ.
        weight_decay: δ of the prior N(0, δ⁻¹ I) (Chen et al.: 1).
        batch_size: minibatch of the SGLD gradient (the swap uses the full-data loss).
        generator: the randomness of starts' noise, minibatches and swaps.
    """
    nbeta = torch.as_tensor(nbeta, dtype=W.dtype)
    if W.ndim != 4 or W.shape[0] != nbeta.numel() or b.shape != (*W.shape[:2], W.shape[-1]):
        raise ValueError(
            f"W must be (G={nbeta.numel()}, R, m, n) and b (G, R, n); got {tuple(W.shape)}, "
            f"{tuple(b.shape)}"
        )
    if (nbeta <= 0).any() or (nbeta.diff() <= 0).any():
        raise ValueError("nbeta must be positive and strictly increasing")
    keep_every = keep_every or steps_per_round
    if steps_per_round % keep_every:
        raise ValueError(f"keep_every={keep_every} must divide steps_per_round={steps_per_round}")
    generator = generator or torch.Generator().manual_seed(0)
    eps = STEP_SCALE / nbeta if step_size is None else torch.as_tensor(step_size, dtype=W.dtype)
    eps = eps.expand(nbeta.shape).reshape(-1, 1, 1)  # (rung, walker, chain)
    act = get_activation(activation)
    G, R = W.shape[:2]
    walker = torch.arange(G * R).reshape(G, R)
    walkers, Ws, bs, losses = [walker.clone()], [], [], []
    proposed = torch.zeros(G - 1)
    accepted = torch.zeros(G - 1)
    for rnd in range(num_rounds):
        problem = tms_problem(
            W,
            b,
            dataset,
            None,
            act,
            sample_bias=True,
            num_chains=1,
            batch_size=min(batch_size, dataset.shape[-2]),
            dims=("rung", "walker"),
            coords={},
        )
        kernel = SGLD(
            problem.loss_and_grad,
            problem.event_ndims,
            step_size=eps,
            nbeta=nbeta.reshape(-1, 1, 1),
            weight_decay=weight_decay,
        )
        traces = sample(
            problem,
            kernel,
            steps_per_round,
            generator,
            backend=backend,
            keep_params_every=keep_every,
        )
        Wk, bk = (p.squeeze(2) for p in traces.params)  # (G, R, kept, ...)
        if not (torch.isfinite(Wk).all() and torch.isfinite(bk).all()):
            raise FloatingPointError(f"a chain diverged in round {rnd}: lower step_size")
        Ws.append(Wk)
        bs.append(bk)
        W, b = Wk[:, :, -1].contiguous(), bk[:, :, -1].contiguous()
        with torch.no_grad():
            L = reconstruction_loss(W, b, dataset, None, act)  # (G, R)
        for j in range(rnd % 2, G - 1, 2):  # even pairs, then odd pairs, alternately
            log_a = (nbeta[j] - nbeta[j + 1]) * (L[j] - L[j + 1])
            u = torch.rand(R, generator=generator, dtype=L.dtype)
            swap = torch.log(u) < log_a
            proposed[j] += R
            accepted[j] += swap.sum()
            for t in (W, b, L, walker):
                t[j, swap], t[j + 1, swap] = t[j + 1, swap].clone(), t[j, swap].clone()
        losses.append(L.clone())
        walkers.append(walker.clone())
    return TemperedSamples(
        nbeta=nbeta,
        W=torch.cat(Ws, dim=2),
        b=torch.cat(bs, dim=2),
        loss=torch.stack(losses, dim=-1),
        swap_rate=accepted / proposed.clamp(min=1),
        walker=torch.stack(walkers),
    )


def log_ladder(n_min: float, n_max: float, num: int) -> Tensor:
    """`num` values of nβ evenly spaced in log between n_min and n_max."""
    if not 0 < n_min < n_max or num < 2:
        raise ValueError(f"need 0 < n_min < n_max and num ≥ 2, got {n_min}, {n_max}, {num}")
    return torch.logspace(math.log10(n_min), math.log10(n_max), num, dtype=torch.float64)
