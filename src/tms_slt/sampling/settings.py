"""The sampler's settings per anchor: automatic where asked (from the curvature of L_n and
pilot runs), and the evidence recorded with them (`LLCResult.calibration`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tms_slt.sampling import curvature
from tms_slt.sampling.backends import sample
from tms_slt.sampling.checks import PROBED_CHAINS
from tms_slt.sampling.noise import C_NOISE, MAX_NOISE_CORRECTION, gradient_noise, noise_record
from tms_slt.sampling.problems import Problem
from tms_slt.sampling.sgld import SGLD

#: Steps of each pilot run that measures the curvature where the chains go (auto ε). Pilots
#: repeat (at most MAX_PILOT_ROUNDS) while the ε they propose exceeds PILOT_GROWTH times the
#: ε they ran at: ε never grows much beyond a value seen to be stable, and near a singular
#: minimum each pilot reaches further towards the posterior's scale.
PILOT_STEPS = 200
MAX_PILOT_ROUNDS = 6
PILOT_GROWTH = 4.0


#: γ = C_LOCALIZATION · nβ · h_soft: the softest curved direction keeps k/(k+γ) ≥ 95%.
C_LOCALIZATION = 0.05
#: ... and at most C_SINGULAR · √(nβ h_max): a direction where L_n grows like h_max·t⁴
#: has posterior width t ≈ (nβ h_max)^(−1/4), and γt² ≪ 1 keeps the localization off it.
C_SINGULAR = 0.1
#: ε = C_STEP / (nβ h_max + γ): the stiffest direction's variance is inflated by ≤ 2.6%.
C_STEP = 0.1
#: Burn-in and post-burn-in draws, in units of the slowest relaxation time (`slowest_rate`).
BURNIN_TAUS = 2.0
SAMPLE_TAUS = 16.0
#: Bounds on the automatic number of draws (burn-in included).
MIN_DRAWS, MAX_DRAWS = 500, 20_000


@dataclass(frozen=True)
class Settings:
    """Per-anchor SGLD settings (each (...)) and a common chain length; `noise_correction`
    κ (...) is the share of the injected noise the minibatch gradient supplies (0: none)."""

    step_size: Tensor
    localization: Tensor
    num_burnin: int
    num_draws: int
    noise_correction: Tensor | float = 0.0


def noise_corrected(
    settings: Settings, nbeta: Any
) -> tuple[Tensor | float, Tensor | float, Tensor | float]:
    """(ε', nβ', γ') = (ε(1−κ), nβ/(1−κ), γ/(1−κ)): the SGLD step at (ε, nβ, γ) with its
    injected variance lowered from ε to ε(1−κ), written as a plain SGLD step. The minibatch
    gradient adds (ε nβ/2)² Var(∇L_m) = ε·κ_i in direction i (`noise.gradient_noise`),
    so with κ = mean_i κ_i the curved directions' variance, and λ̂ = nβ(E[L] − L*), are those
    of noise-free SGLD at nβ (Ahn, Korattikara & Welling 2012 subtract the gradient noise's
    covariance from the injected noise the same way; this subtracts its mean). λ̂ is computed
    with the nominal nβ."""
    keep = 1.0 - torch.as_tensor(settings.noise_correction, dtype=torch.float64)
    nb = torch.as_tensor(nbeta, dtype=torch.float64)
    return settings.step_size * keep, nb / keep, settings.localization / keep


def predicted_bias(
    curv: curvature.Curvature,
    nbeta: Tensor | float,
    step_size: Tensor | float,
    localization: Tensor | float,
    num_burnin: int,
    num_draws: int,
    noise_correction: Tensor | float = 0.0,
) -> dict[str, Tensor]:
    """Relative bias of λ̂ in the quadratic model of the chain, per anchor (...).

    Over the curved directions (k_i = nβ h_i above the null threshold), with γ, ε, burn-in B
    and T draws, λ̂ → ½ Σ_i k_i · v_i where v_i = 1/((k_i+γ)(1 − ε(k_i+γ)/4)) · r_i and
    r_i = 1 − mean_{B≤t<T} exp(−ε(k_i+γ)t) (the variance relaxing from 0 at the anchor);
    the truth in this model is ½ · (number of curved directions). The minibatch gradient's
    noise multiplies each v_i by 1 + ε nβ² Var(v_iᵀ∇L_m)/4 (`noise.gradient_noise`),
    "noise" on average, less the `noise_correction` taken out of the injected noise
    (`noise_corrected`). Returns "localization", "discretization", "burnin", "noise" (each
    with the others off) and "total".
    """
    ev = curv.eigenvalues
    curved = ev > curv.null_threshold[..., None]
    nb = torch.as_tensor(nbeta, dtype=torch.float64)[..., None]
    eps = torch.as_tensor(step_size, dtype=torch.float64)[..., None]
    gam = torch.as_tensor(localization, dtype=torch.float64)[..., None]
    k = nb * ev.clamp(min=0.0)
    a = eps * (k + gam)
    loc = k / (k + gam).clamp(min=1e-300)
    disc = 1.0 / (1.0 - a / 4).clamp(min=1e-6)
    span = max(num_draws - num_burnin, 1)
    decay = (torch.exp(-a * num_burnin) - torch.exp(-a * num_draws)) / (a * span).clamp(min=1e-300)
    relax = 1.0 - decay.clamp(max=1.0)
    n_curved = curved.sum(-1).clamp(min=1)

    def rel(factor: Tensor) -> Tensor:  # 0 where no direction is curved: nothing to model
        mean = torch.where(curved, factor, torch.zeros_like(factor)).sum(-1) / n_curved
        return torch.where(curved.any(-1), mean - 1.0, torch.zeros_like(mean))

    noise = torch.zeros_like(eps[..., 0] * nb[..., 0])
    if curv.gradient_noise is not None:
        noise = noise_record(curv, nbeta, step_size, None, noise_correction)
        noise = noise["predicted_bias_noise"]
    return {
        "localization": rel(loc),
        "discretization": rel(disc),
        "burnin": rel(relax),
        "noise": noise,
        "total": (1 + rel(loc * disc * relax)) * (1 + noise) - 1,
    }


def auto_settings(
    curv: curvature.Curvature, nbeta: Tensor | float, localization: Any = None
) -> tuple[Tensor, Tensor]:
    """(ε, γ) per anchor from the Hessian spectrum (see the module doc of `curvature`):

    γ = min(C_LOCALIZATION · nβ h_soft, C_SINGULAR · √(nβ h_max)) unless `localization` is
    given, and ε = C_STEP / (nβ h_max + γ), lowered to 4·C_NOISE / (nβ² s̄) where the
    minibatch noise s̄ is measured (but not below the ε whose chain would need MAX_DRAWS
    steps). Anchors with a vanishing Hessian (h_max = 0) get ε from a unit curvature;
    `choose_settings` probes them again after a pilot.
    """
    nb = torch.as_tensor(nbeta, dtype=torch.float64)
    h_max = curv.h_max
    h_soft = curv.h_soft
    flat = h_max <= 0
    h_max = torch.where(flat, torch.ones_like(h_max), h_max)
    h_soft = torch.where(flat | (h_soft <= 0), h_max, h_soft)
    if localization is None:
        gamma = torch.minimum(C_LOCALIZATION * nb * h_soft, C_SINGULAR * (nb * h_max).sqrt())
    else:
        gamma = torch.as_tensor(localization, dtype=torch.float64)
    eps = C_STEP / (nb * h_max + gamma)
    if curv.gradient_noise is not None:
        quiet = 4 * C_NOISE / (nb**2 * curv.gradient_noise).clamp(min=1e-300)
        affordable = (BURNIN_TAUS + SAMPLE_TAUS) / (MAX_DRAWS * slowest_rate(curv, nb, 1.0, gamma))
        eps = torch.minimum(eps, torch.maximum(quiet, affordable))
    return eps, gamma


def slowest_rate(
    curv: curvature.Curvature, nbeta: Any, step_size: Any, localization: Any
) -> Tensor:
    """(...) the slowest relaxation rate per step, ε·(k_slow + γ), of the directions that
    count: the softest curved one, k = nβ h_soft, and, where the Hessian has null
    directions that may be singular rather than flat, a quartic one at its posterior scale,
    k ≈ √(nβ h_max)."""
    nb = torch.as_tensor(nbeta, dtype=torch.float64)
    h_max = curv.h_max.clamp(min=1e-300)
    soft = torch.where(curv.h_soft > 0, curv.h_soft, h_max)
    k = nb * soft
    has_null = curv.num_curved < curv.eigenvalues.shape[-1]
    k = torch.where(has_null, torch.minimum(k, (nb * h_max).sqrt()), k)
    eps = torch.as_tensor(step_size, dtype=torch.float64)
    return eps * (k + torch.as_tensor(localization, dtype=torch.float64))


def chain_length(
    curv: curvature.Curvature,
    nbeta: Any,
    step_size: Any,
    localization: Any,
    num_draws: Any,
    num_burnin: Any,
) -> tuple[int, int]:
    """(draws, burn-in): the given values, or BURNIN_TAUS and then SAMPLE_TAUS relaxation
    times 1/`slowest_rate` of the slowest anchor (draws within MIN_DRAWS..MAX_DRAWS)."""
    rate = slowest_rate(curv, nbeta, step_size, localization)
    near = curvature.near_minimum(curv, nbeta)
    if bool(near.any()):  # λ̂ is meaningless elsewhere: let those not set the length
        rate = rate[near]
    slowest = float((1.0 / rate).max()) if rate.numel() else 1.0
    if not math.isfinite(slowest):
        slowest = float(MAX_DRAWS)
    burnin = math.ceil(BURNIN_TAUS * slowest)
    if num_draws == "auto":
        draws = burnin + math.ceil(SAMPLE_TAUS * slowest)
        draws = min(max(draws, MIN_DRAWS), MAX_DRAWS)
        if num_burnin != "auto":
            draws = max(draws, num_burnin + MIN_DRAWS // 2)
    else:
        draws = num_draws
    burnin = min(burnin, draws // 2) if num_burnin == "auto" else num_burnin
    return draws, burnin


def per_anchor(value: Tensor | float) -> Tensor | float:
    """A per-anchor (...) coefficient with room for the chain dim: (..., 1)."""
    if isinstance(value, Tensor) and value.ndim:
        return value.to(torch.float32).unsqueeze(-1)
    return float(value)


def _pilot_round(
    problem: Problem,
    curv: curvature.Curvature,
    nbeta: Any,
    eps: Tensor,
    gam: Tensor,
    auto_localization: bool,
    generator: torch.Generator,
    backend: str,
    weight_decay: float,
    bounding_box: float | None,
    anchor_noise: Tensor | None,
) -> tuple[curvature.Curvature, Tensor, Tensor]:
    """One pilot: PILOT_STEPS steps at (ε, γ), then the curvature at the chains' ends raises
    h_max (`curvature.combine`), the minibatch noise there (at least `anchor_noise`, the
    anchor's) sets s̄, and the proposed ε, γ follow. Anchors whose pilot diverged get ε/10
    proposed."""
    pilot = SGLD(
        problem.loss_and_grad,
        problem.event_ndims,
        step_size=per_anchor(eps),
        nbeta=nbeta,
        localization=per_anchor(gam),
        weight_decay=weight_decay,
        bounding_box=bounding_box,
    )
    traces = sample(
        problem, pilot, PILOT_STEPS, generator, backend=backend, keep_params_every=PILOT_STEPS
    )
    ends = tuple(  # (..., chain ≤ PROBED_CHAINS, *event): the chains' last positions
        p.select(p.ndim - k - 1, 0).narrow(
            p.ndim - k - 2, 0, min(PROBED_CHAINS, p.shape[p.ndim - k - 2])
        )
        for p, k in zip(traces.params, problem.event_ndims, strict=True)
    )
    finite = torch.ones(curv.h_max.shape, dtype=torch.bool)
    for e, k in zip(ends, problem.event_ndims, strict=True):
        finite &= torch.isfinite(e).flatten(e.ndim - k - 1).all(-1).cpu()
    if not bool(finite.all()):
        return curv, torch.where(finite, eps, eps / 10), gam
    at_ends = curvature.probe(problem, generator, params=ends, gradient=False, rows=curv.rows)
    curv = curvature.combine(curv, at_ends)
    if anchor_noise is not None:  # the noise grows away from w*: measure it there too
        every_end = tuple(
            p.select(p.ndim - k - 1, 0)
            for p, k in zip(traces.params, problem.event_ndims, strict=True)
        )
        side = curvature.side_stream(generator)
        there = gradient_noise(
            problem, curv, side, every_end, bias_per_unit=noise_bias_per_unit(curv, nbeta)
        )
        # the pilot's latest ε set its chains' spread: its measurement replaces an earlier one
        curv = dataclasses.replace(curv, gradient_noise=torch.maximum(anchor_noise, there))
    proposed, gam = auto_settings(curv, nbeta, None if auto_localization else gam)
    return curv, proposed, gam


def choose_settings(
    problem: Problem,
    nbeta: float | Tensor,
    *,
    step_size: Any,
    localization: Any,
    num_draws: Any,
    num_burnin: Any,
    generator: torch.Generator,
    backend: str = "auto",
    weight_decay: float = 0.0,
    bounding_box: float | None = None,
    batch_size: int | None = None,
) -> tuple[Settings, dict[str, Any], curvature.Curvature | None]:
    """The SGLD settings per anchor, automatic where asked, and the evidence for them.

    The curvature of L_n is probed at every anchor (`curvature.probe`). For an automatic ε
    a pilot of PILOT_STEPS steps then runs at the anchor-based settings and the curvature is
    probed again at the chains' end points (`curvature.combine`): near a singular minimum
    the stiffness grows away from w*. γ, ε and the chain length follow
    `auto_settings`; given values are kept. With `batch_size` (the minibatch size m) the
    record names the smallest m whose noise bias would be C_NOISE at the chosen ε
    ("batch_size_needed"). Returns the settings, a record
    (each entry per anchor, or a string) for `LLCResult.calibration`, and the anchor's
    `Curvature` (None where there is nothing to probe).
    """
    if problem.loss_fn is None:  # nothing to probe: only given settings can run
        if any(isinstance(v, str) for v in (step_size, localization, num_draws, num_burnin)):
            raise ValueError("automatic settings need a differentiable loss; pass numbers")
        settings = Settings(
            torch.as_tensor(step_size), torch.as_tensor(localization), num_burnin, num_draws
        )
        return settings, {}, None
    side = curvature.side_stream(generator)
    curv = curvature.probe(problem, side)
    curv = dataclasses.replace(
        curv,
        rows=curvature.probe_rows(problem, side),
        gradient_noise=gradient_noise(
            problem, curv, side, bias_per_unit=noise_bias_per_unit(curv, nbeta)
        ),
    )
    anchor_noise = curv.gradient_noise
    auto_eps, auto_gam = auto_settings(curv, nbeta)
    eps = auto_eps if step_size == "auto" else torch.as_tensor(step_size)
    gam = auto_gam if localization == "auto" else torch.as_tensor(localization)
    if step_size == "auto":
        for _ in range(MAX_PILOT_ROUNDS):
            tried = eps
            curv, proposed, gam = _pilot_round(
                problem,
                curv,
                nbeta,
                eps,
                gam,
                localization == "auto",
                generator,
                backend,
                weight_decay,
                bounding_box,
                anchor_noise,
            )
            eps = torch.minimum(proposed, PILOT_GROWTH * tried)
            # Again while ε moves by more than PILOT_GROWTH either way: a pilot at a far
            # larger ε spreads (and meets noise) where the chains will not.
            steady = (proposed <= PILOT_GROWTH * tried) & (proposed >= tried / PILOT_GROWTH)
            if bool(steady.all()):
                break
    draws, burnin = chain_length(curv, nbeta, eps, gam, num_draws, num_burnin)
    kappa = 0.0
    if step_size == "auto" and curv.gradient_noise is not None:
        kappa = noise_record(curv, nbeta, eps, None)["predicted_bias_noise"]
        kappa = kappa.clamp(max=MAX_NOISE_CORRECTION)
    settings = Settings(eps, gam, burnin, draws, kappa)
    bias = predicted_bias(curv, nbeta, eps, gam, burnin, draws, kappa)
    record: dict[str, Any] = {
        "step_size": torch.as_tensor(eps, dtype=torch.float64).expand(curv.h_max.shape),
        "localization": torch.as_tensor(gam, dtype=torch.float64).expand(curv.h_max.shape),
        "hessian_max": curv.h_max,
        "hessian_soft": curv.h_soft,
        "hessian_min": curv.h_min,
        "num_curved": curv.num_curved,
        "newton_drop": curv.newton_drop,
        "newton_shift": curvature.newton_shift(curv, nbeta),
        "saddle": curvature.is_saddle(curv),
        "grad_norm": curv.grad_norm,
        **{f"predicted_bias_{k}": v for k, v in bias.items()},
        "mode": ", ".join(
            f"{k}={'auto' if isinstance(v, str) else 'given'}"
            for k, v in (
                ("step_size", step_size),
                ("localization", localization),
                ("num_draws", num_draws),
                ("num_burnin", num_burnin),
            )
        ),
    }
    record["noise_correction"] = torch.as_tensor(kappa, dtype=torch.float64).expand(
        curv.h_max.shape
    )
    record.update(noise_record(curv, nbeta, eps, batch_size, kappa))
    return settings, record, curv


def noise_bias_per_unit(curv: curvature.Curvature, nbeta: Any) -> Tensor:
    """(...) κ per unit of s̄, ε nβ²/4, at the largest ε `auto_settings` may choose,
    C_STEP/(nβ h_max)."""
    nb = torch.as_tensor(nbeta, dtype=torch.float64)
    return C_STEP * nb / (4 * curv.h_max.clamp(min=1e-300))
