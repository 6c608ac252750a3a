"""Configuration tracking and phase-transition detection (issue #4).

A subpackage, one job per module:

* :mod:`~tms_slt.transitions.tracking`: :func:`track`, observables over (checkpoint, instance).
* :mod:`~tms_slt.transitions.changepoints`: noise-calibrated change points (ruptures PELT) and
  critical points of smoothed curves, on plain 1-d arrays.
* :mod:`~tms_slt.transitions.records`: the :class:`Transition` record and its table.
* :mod:`~tms_slt.transitions.dynamical`: :func:`detect_dynamical` over training time.
* :mod:`~tms_slt.transitions.sweep`: :func:`detect_sweep` over a true-distribution sweep and
  :func:`refine_boundary` (bisection).
* :mod:`~tms_slt.transitions.bayesian`: :func:`bayesian_crossings` in the sample size n and
  :func:`posterior_phase_fractions`.
* :mod:`~tms_slt.transitions.phase_diagram`: Elhage et al.'s two-feature, one-dimension phase
  diagram in closed form (candidate losses and analytic boundaries).
* :mod:`~tms_slt.transitions.run`: :func:`detect_run`, the body of ``tms-slt detect RUN_DIR``.

The detectors consume series of observables only; they never reach into models or samplers.
"""

from tms_slt.transitions.bayesian import (
    bayesian_crossings,
    free_energy,
    pooled_crossing,
    posterior_configurations,
    posterior_phase_fractions,
)
from tms_slt.transitions.changepoints import (
    change_points,
    critical_points,
    noise_sigma,
    pelt_penalty,
    smooth,
)
from tms_slt.transitions.dynamical import SIGNALS, detect_dynamical
from tms_slt.transitions.phase_diagram import (
    TWO_FEATURE_PHASES,
    superposition_onset_density,
    two_feature_boundary,
    two_feature_labels,
    two_feature_losses,
    two_feature_phase,
)
from tms_slt.transitions.records import Transition, format_transitions
from tms_slt.transitions.run import detect_run
from tms_slt.transitions.sweep import detect_sweep, refine_boundary
from tms_slt.transitions.tracking import track

__all__ = [
    "SIGNALS",
    "TWO_FEATURE_PHASES",
    "Transition",
    "bayesian_crossings",
    "change_points",
    "critical_points",
    "detect_dynamical",
    "detect_run",
    "detect_sweep",
    "format_transitions",
    "free_energy",
    "noise_sigma",
    "pelt_penalty",
    "pooled_crossing",
    "posterior_configurations",
    "posterior_phase_fractions",
    "refine_boundary",
    "smooth",
    "superposition_onset_density",
    "track",
    "two_feature_boundary",
    "two_feature_labels",
    "two_feature_losses",
    "two_feature_phase",
]
