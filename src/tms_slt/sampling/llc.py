"""The local learning coefficient (LLC): `estimate_llc` runs SGLD, `compute_llc`
recomputes the estimate from stored loss traces.

Lau, Furman, Wang, Murfet, Wei 2023 (arXiv 2308.12108):

    λ̂(w*) = nβ (E_w[L_n(w)] − L_n(w*)),   nβ = n / log n by default,

the expectation over the localized tempered posterior
∝ exp(−nβ L_n(w) − (γ/2)‖w − w*‖²), approximated by SGLD chains. As in
devinterp, E_w[L_n(w)] is estimated by the minibatch losses along the chains
after burn-in. w* must be a local minimum of L_n: evaluated elsewhere λ̂ is shifted
by about nβ(L_n(w*) − L_n(ŵ)) (negative estimates are flagged, see diagnostics).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from tms_slt.config import LLC_SAMPLERS
from tms_slt.models import TMSParams, get_activation
from tms_slt.sampling.backends import BACKENDS, resolve_backend, sample
from tms_slt.sampling.chains import Traces, draw_noise, run_chains
from tms_slt.sampling.checks import RATIO_POSITIONS, curvature_ratio_at_ends, lowest_loss_at_ends
from tms_slt.sampling.curvature import side_stream
from tms_slt.sampling.noise import noise_record, noise_where_chains_went
from tms_slt.sampling.precision import MAX_RATIO_TO_EXTEND, extend_for_precision
from tms_slt.sampling.problems import Problem, module_problem, potential_problem, tms_problem
from tms_slt.sampling.result import DIVERGENCE_FACTOR, LLCResult, compute_llc, default_nbeta
from tms_slt.sampling.settings import (
    choose_settings,
    noise_bias_per_unit,
    noise_corrected,
    per_anchor,
)
from tms_slt.sampling.sgld import SGLD, Coefficient, RMSPropSGLD

if TYPE_CHECKING:
    from tms_slt.training import Trajectory

SAMPLERS = LLC_SAMPLERS

__all__ = [
    "BACKENDS",
    "DIVERGENCE_FACTOR",
    "SAMPLERS",
    "LLCResult",
    "Traces",
    "check_hyperparameters",
    "compute_llc",
    "default_nbeta",
    "draw_noise",
    "estimate_llc",
    "problem_for",
    "resolve_backend",
    "run_chains",
    "sample",
]


def _is_potential(target: Any) -> bool:
    from tms_slt.theory import Potential

    return isinstance(target, Potential)


def problem_for(
    target: Any,
    loss_fn: Callable[..., Tensor] | None,
    dataset: Any,
    *,
    importance: Tensor | None,
    activation: str,
    swish_sharpness: float,
    num_chains: int,
    batch_size: int,
) -> Problem:
    """Build the sampler's `Problem` for any supported target (see `estimate_llc`)."""
    from tms_slt.training import Trajectory

    if isinstance(target, Trajectory):
        if target.train_data is None and dataset is None:
            raise ValueError(
                "this trajectory was trained online; pass dataset= to estimate the LLC"
            )
        data = target.train_data if dataset is None else torch.as_tensor(dataset)
        sample_bias = target.config.model.bias if target.config is not None else True
        return tms_problem(
            target.W,
            target.b,
            data,
            target.importance,
            target.activation_fn(),
            sample_bias=sample_bias,
            num_chains=num_chains,
            batch_size=batch_size,
            dims=("checkpoint", "instance"),
            coords={
                "checkpoint": target.steps.numpy(),
                "instance": np.arange(target.num_instances),
            },
        )
    if isinstance(target, torch.nn.Module):
        return module_problem(
            target, loss_fn, dataset, num_chains=num_chains, batch_size=batch_size
        )
    if _is_potential(target):
        return potential_problem(target, dataset, num_chains=num_chains)
    if (
        isinstance(target, tuple)
        and len(target) == 2
        and all(isinstance(t, Tensor) for t in target)
    ):
        W, b = TMSParams(*target)
        if dataset is None:
            raise ValueError(
                "TMS parameters need dataset= (the training set D_n, shape (..., n, n_features))"
            )
        imp = None if importance is None else torch.as_tensor(importance, dtype=W.dtype)
        lead = W.shape[:-2]
        return tms_problem(
            W,
            b,
            torch.as_tensor(dataset),
            imp,
            get_activation(activation, sharpness=swish_sharpness),
            sample_bias=True,
            num_chains=num_chains,
            batch_size=batch_size,
            dims=tuple(f"dim_{i}" for i in range(len(lead))),
            coords={},
        )
    raise TypeError(
        "estimate_llc takes a Trajectory, TMS parameters (W, b), a torch.nn.Module or a "
        f"theory.Potential, got {type(target).__name__}"
    )


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_coefficient(name: str, value: Any, *, allow_zero: bool) -> None:
    t = torch.as_tensor(value, dtype=torch.float64)
    ok = (t >= 0) if allow_zero else (t > 0)
    if not (bool(ok.all()) and bool(torch.isfinite(t).all())):
        sign = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be {sign}, got {value}")


def check_hyperparameters(
    *,
    step_size: Coefficient,
    nbeta: Coefficient | None,
    localization: Coefficient,
    num_chains: int,
    num_draws: int,
    num_burnin: int,
    batch_size: int,
) -> None:
    """Raise a one-line ValueError for any invalid sampler setting, before any work."""
    for name, value in (
        ("num_chains", num_chains),
        ("num_draws", num_draws),
        ("batch_size", batch_size),
    ):
        _check_positive_int(name, value)
    if isinstance(num_burnin, bool) or not isinstance(num_burnin, int):
        raise ValueError(f"num_burnin must be an integer, got {num_burnin!r}")
    if not 0 <= num_burnin < num_draws:
        raise ValueError(f"num_burnin must be in [0, num_draws={num_draws}), got {num_burnin}")
    _check_coefficient("step_size (ε)", step_size, allow_zero=False)
    if nbeta is not None:
        _check_coefficient("nbeta (nβ)", nbeta, allow_zero=False)
    _check_coefficient("localization (γ)", localization, allow_zero=True)


def estimate_llc(
    target: Trajectory | TMSParams | tuple[Tensor, Tensor] | torch.nn.Module | Any,
    loss_fn: Callable[..., Tensor] | None = None,
    dataset: Any = None,
    *,
    step_size: float | Tensor | str = "auto",
    nbeta: float | None = None,
    localization: float | Tensor | str = "auto",
    num_chains: int = 4,
    num_draws: int | str = "auto",
    num_burnin: int | str = "auto",
    batch_size: int = 100,
    thin: int = 1,
    weight_decay: float = 0.0,
    bounding_box: float | None = None,
    importance: Tensor | None = None,
    activation: str = "relu",
    swish_sharpness: float = 1.0,
    mala: bool = False,
    sampler: str = "sgld",
    backend: str = "auto",
    generator: torch.Generator | None = None,
    progress: bool = True,
    keep_params_every: int | None = None,
) -> LLCResult:
    """Estimate the LLC λ̂(w*) = nβ(E[L_n(w)] − L_n(w*)) at every anchor at once.

    All anchors (every checkpoint × instance of a Trajectory, or every leading
    index of TMS params) and all chains advance together in one batched SGLD
    step (Lau et al. 2023, arXiv 2308.12108):

        w ← w − (ε/2)(nβ ∇L_m(w) + γ(w − w*)) + N(0, ε),

    Args:
        target: a Trajectory (uses its training set D_n), TMS params (W, b) with
            any leading dims plus `dataset` of shape (..., n, n_features), any
            nn.Module with `loss_fn(model, batch) -> mean loss` and `dataset` a
            tensor or tuple of tensors indexed along dim 0 (chains are vmapped
            through torch.func.functional_call), or a `theory.Potential` K(w)
            (no data; `dataset` is then the anchor w*, default 0, and nβ is required).
        step_size: ε > 0.
        nbeta: nβ > 0; default n / log n with n the number of training samples.
        localization: γ ≥ 0.
        num_chains, num_draws, num_burnin: chains per anchor, draws per chain
            (including burn-in), and the burn-in discarded from the estimate.
        batch_size: minibatch size m of the gradient; each chain draws its own.
        thin: keep the loss (and MALA acceptance) of every thin-th step only, steps 0,
            thin, 2·thin, …; the burn-in still counts steps. Saves memory and storage on
            long chains; it cannot lower λ̂'s Monte Carlo error (every draw is a valid
            sample), so the default 1 keeps all.
        weight_decay, bounding_box: see `SGLD`.
        importance, activation, swish_sharpness: the TMS loss, for raw params.
        mala: also record the per-step MALA acceptance probability (a second
            gradient evaluation per step); `LLCResult.mala_accept`.
        sampler: the kernel. "sgld" (default): the update above (`sgld.SGLD`). "rmsprop":
            RMSProp-preconditioned SGLD as devinterp's `rmsprop_sgld` (`sgld.RMSPropSGLD`,
            α = 0.99, λ = 0.1): per coordinate G = 1/(λ + √V), V the running mean of the
            squared minibatch gradient, drift times G and noise variance εG; no MALA.
            With step_size="auto" its ε is λ times the SGLD rule's, so the largest step
            any coordinate takes, ε·G_max = ε/λ, is the one SGLD's rule allows (V starts
            at 0, so the first steps take it); γ, the draws and the noise correction are
            SGLD's. SGLD is the default because it is the more accurate here: on five
            known-λ models (benchmarks/results/sampler_accuracy.md) RMSProp's λ̂ is 4–8% off
            where SGLD's is within 2%, its preconditioner, uncorrected (no Γ term, as in
            devinterp), tilting the chain towards where G is small.
        backend: how the steps run; all give the same trajectory up to float rounding
            (same generator ⇒ same minibatches and noise). "native": the fused C kernel
            for TMS targets on the CPU in float32 (`sampling.native`; built on first use
            with the system C compiler; about 10× eager torch here, over 1000× a devinterp
            loop, see benchmarks/llc_speed.py); "torch":
            batched eager torch, any target and device; "compile": the torch step through
            `torch.compile` (a one-off compile of tens of seconds); "auto" (default):
            "native" where it applies and builds, else "torch".
        generator: the single source of noise and minibatches (per-run stream);
            default a generator seeded with 0.
        progress: show a progress bar over draws.
        keep_params_every: k; also record every k-th visited parameter point, w_k, w_2k,
            … (after burn-in or not: all of them; discard the burn-in yourself), as
            `LLCResult.param_trace`, each (..., chain, ⌊num_draws / k⌋, *event). Off by
            default (no copies, no memory); for posterior configuration fractions see
            `transitions.bayesian.posterior_configurations`.

    Returns:
        LLCResult with traces of shape (..., chain, draw).

    Raises:
        ValueError: invalid settings (ε ≤ 0, nβ ≤ 0, γ < 0, burn-in ≥ draws, a batch
            larger than the dataset, a model without parameters, a loss that is not a
            scalar per batch), always before sampling starts.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if sampler == "rmsprop" and mala:
        raise ValueError("mala=True is not supported with sampler='rmsprop'")
    auto = _auto_flags(step_size, localization, num_draws, num_burnin)
    check_hyperparameters(
        step_size=1.0 if auto["step_size"] else step_size,
        nbeta=nbeta,
        localization=0.0 if auto["localization"] else localization,
        num_chains=num_chains,
        num_draws=_placeholder_draws(auto, num_draws, num_burnin),
        num_burnin=0 if auto["num_burnin"] else num_burnin,
        batch_size=batch_size,
    )
    _check_positive_int("thin", thin)
    if keep_params_every is not None:
        _check_positive_int("keep_params_every", keep_params_every)
    problem = problem_for(
        target,
        loss_fn,
        dataset,
        importance=importance,
        activation=activation,
        swish_sharpness=swish_sharpness,
        num_chains=num_chains,
        batch_size=batch_size,
    )
    if nbeta is None:
        if problem.n is None:
            raise ValueError("a Potential has no training set: pass nbeta explicitly")
        nbeta = default_nbeta(problem.n)
    if generator is None:
        generator = torch.Generator(device=problem.params[0].device).manual_seed(0)
    _check_anchor_loss(problem)
    settings, calibration, curv = choose_settings(
        problem,
        nbeta,
        step_size=step_size,
        localization=localization,
        num_draws=num_draws,
        num_burnin=num_burnin,
        generator=generator,
        backend=backend,
        weight_decay=weight_decay,
        bounding_box=bounding_box,
        batch_size=None if problem.n is None else batch_size,  # a potential has no batches
    )
    num_draws, num_burnin = settings.num_draws, settings.num_burnin
    kept_burnin = -(-num_burnin // thin)  # ⌈num_burnin / thin⌉ kept draws are burn-in
    if kept_burnin >= -(-num_draws // thin):
        raise ValueError(
            f"thin={thin} keeps no draw after the burn-in ({num_burnin} of {num_draws} draws)"
        )
    if keep_params_every is not None and keep_params_every > num_draws:
        raise ValueError(
            f"keep_params_every={keep_params_every} exceeds num_draws={num_draws}: "
            "no draw would be kept"
        )
    step, tempered, pull = noise_corrected(settings, nbeta)
    kind = SGLD if sampler == "sgld" else RMSPropSGLD
    if kind is RMSPropSGLD and auto["step_size"]:
        step = step * RMSPropSGLD.stability  # ε·G_max = the SGLD rule's ε
        if calibration:
            calibration["rmsprop_step_size"] = settings.step_size * RMSPropSGLD.stability
    if calibration:
        calibration["sampler"] = sampler
    kernel = kind(
        problem.loss_and_grad,
        problem.event_ndims,
        step_size=per_anchor(step),
        nbeta=per_anchor(tempered),
        localization=per_anchor(pull),
        weight_decay=weight_decay,
        bounding_box=bounding_box,
        mala=mala,
    )
    traces = sample(
        problem,
        kernel,
        num_draws,
        generator,
        progress,
        backend=backend,
        keep_params_every=keep_params_every
        or (max(num_draws // RATIO_POSITIONS, 1) if curv is not None else None),
    )
    if curv is not None:
        calibration["curvature_ratio"] = curvature_ratio_at_ends(problem, curv, traces, nbeta)
        side = side_stream(generator)
        calibration["lowest_loss_shift"] = lowest_loss_at_ends(problem, traces, nbeta, side)
        unit = noise_bias_per_unit(curv, nbeta)
        curv = noise_where_chains_went(problem, curv, traces, side, unit, RATIO_POSITIONS)
        calibration.update(
            noise_record(
                curv,
                nbeta,
                settings.step_size,
                None if problem.n is None else batch_size,
                settings.noise_correction,
            )
        )
        if keep_params_every is None:
            traces = traces._replace(params=None)
    if auto["num_draws"] and sampler == "sgld":  # RMSProp's V is not in Traces.last
        traces, calibration["extension"] = extend_for_precision(
            problem,
            kernel,
            traces,
            num_burnin,
            nbeta,
            _sound_settings(problem, nbeta, calibration),
            generator,
            backend=backend,
            divergence_bound=DIVERGENCE_FACTOR * problem.num_params,
        )
    accept = None if traces.mala_accept is None else traces.mala_accept[..., ::thin]
    return compute_llc(
        traces.loss[..., ::thin].contiguous(),
        problem.init_loss,
        nbeta,
        num_burnin=kept_burnin,
        dims=problem.dims,
        coords=problem.coords,
        num_params=problem.num_params,
        mala_accept=None if accept is None else accept.contiguous(),
        param_trace=traces.params,
        keep_params_every=keep_params_every,
        thin=thin,
        calibration=calibration,
    )


def _sound_settings(problem: Problem, nbeta: Any, calibration: dict) -> Tensor:
    """(...) the anchors that pass every check of the settings and the curvature
    (`diagnostics`), whose chains sample where the curvature is w*'s within
    `precision.MAX_RATIO_TO_EXTEND`, and whose Hessian has no null direction but the
    symmetries': where only precision may be missing, longer chains can supply it.

    Where flat or singular directions remain, λ̂ depends on how far the chains have explored
    them, on a time scale the quadratic model does not give; a longer chain there shrinks
    the spread between chains without that exploration (the DLN (3, 4, 4, 2), r = 1: −5%
    and −17% on two seeds, each reading a 3% error after 4× the draws)."""
    from tms_slt.sampling.diagnostics import calibration_failures

    shape = tuple(problem.init_loss.shape)
    sound = torch.from_numpy(np.asarray(~calibration_failures(calibration, nbeta, shape)))
    if "num_curved" in calibration:
        symmetries = 0
        if problem.symmetry_tangents is not None:
            symmetries = problem.symmetry_tangents(problem.anchor).shape[-2]
        sound &= calibration["num_curved"] >= problem.num_params - symmetries
    ratio = calibration.get("curvature_ratio")
    if ratio is not None:
        off = ratio.log().abs() > math.log(MAX_RATIO_TO_EXTEND)
        sound &= ~(off & torch.isfinite(ratio))
    return sound


def _auto_flags(*values: Any) -> dict[str, bool]:
    names = ("step_size", "localization", "num_draws", "num_burnin")
    flags = {}
    for name, value in zip(names, values, strict=True):
        if isinstance(value, str):
            if value != "auto":
                raise ValueError(f"{name} must be a number or 'auto', got {value!r}")
            flags[name] = True
        else:
            flags[name] = False
    return flags


def _placeholder_draws(auto: dict[str, bool], num_draws: Any, num_burnin: Any) -> Any:
    """What `check_hyperparameters` validates num_draws as, while one side is "auto"."""
    if not auto["num_draws"]:
        return num_draws
    if auto["num_burnin"] or not isinstance(num_burnin, int) or isinstance(num_burnin, bool):
        return 1
    return max(num_burnin, 0) + 1


def _check_anchor_loss(problem: Problem) -> None:
    bad = ~torch.isfinite(problem.init_loss)
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"the loss at the anchor is not finite (at index {where} of {problem.dims}): "
            "the LLC needs a finite loss at w*; check the parameters and the data"
        )
