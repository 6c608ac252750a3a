"""Configuration tracking: the observables the detectors consume.

`track` gathers, for every checkpoint (or sweep point), the loss, ‖W‖²_F, dims/feature,
WWᵀ eigenvalues with their top gap and multiplicity, Elhage's per-feature dimensionality,
the k-gon label with its distance from a regular polygon and, when given, the LLC with its
reliability flag. Detectors read only these series; they never reach into models or samplers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from tms_slt import geometry

#: Eigenvalues within this fraction of the largest one count as equal (multiplicity).
EIG_RTOL = 0.1

if TYPE_CHECKING:
    from tms_slt.sampling.llc import LLCResult
    from tms_slt.training import Trajectory


def track(trajectory: Trajectory, llc: LLCResult | None = None) -> xr.Dataset:
    """Observables of a trajectory as a Dataset over (checkpoint, instance).

    Variables: loss, feature_count (‖W‖²_F), dims_per_feature (m/‖W‖²_F),
    gram_eigenvalues (eigenvalues of WWᵀ, ascending, dim `eig`), eig_gap
    (λ_max − λ_next of WWᵀ; 0 for a regular k-gon with k ≥ 3, 2 for a unit digon),
    eig_multiplicity (how many eigenvalues lie within EIG_RTOL·λ_max of λ_max),
    feature_dimensionality (Elhage's D_i, dim `feature`), kgon (label, m = 2
    only) and regular_residual (angular + norm distance from a regular k-gon, see
    `geometry.classify`, m = 2 only), W and b; with `llc`, also llc_mean, llc_std,
    num_divergent and llc_reliable (`LLCResult.diagnostics["reliable"]`).
    """
    W, b = trajectory.W, trajectory.b
    dims = ("checkpoint", "instance")
    coords = {
        "checkpoint": trajectory.steps.numpy(),
        "instance": np.arange(trajectory.num_instances),
        "feature": np.arange(W.shape[-1]),
        "hidden": np.arange(W.shape[-2]),
    }
    data = {
        "loss": (dims, trajectory.loss.double().numpy()),
        "feature_count": (dims, geometry.feature_count(W).double().numpy()),
        "dims_per_feature": (dims, geometry.dims_per_feature(W).double().numpy()),
        "gram_eigenvalues": ((*dims, "eig"), geometry.gram_eigenvalues(W).double().numpy()),
        "feature_dimensionality": (
            (*dims, "feature"),
            geometry.feature_dimensionality(W).double().numpy(),
        ),
        "W": ((*dims, "hidden", "feature"), W.double().numpy()),
        "b": ((*dims, "feature"), b.double().numpy()),
    }
    gap, mult = eigen_summary(data["gram_eigenvalues"][1])
    data["eig_gap"] = (dims, gap)
    data["eig_multiplicity"] = (dims, mult)
    if W.shape[-2] == 2:
        data["kgon"] = (dims, geometry.kgon_labels(W, b).astype(str))
        configs = geometry.classify_batch(W, b)
        residual = np.vectorize(lambda c: c.regular_residual, otypes=[float])(configs)
        data["regular_residual"] = (dims, residual)
    ds = xr.Dataset(data, coords=coords)
    ds["checkpoint"].attrs["long_name"] = "optimizer step"
    if llc is not None:
        ds["llc_mean"] = (dims, llc.mean.numpy())
        ds["llc_std"] = (dims, llc.std.numpy())
        ds["num_divergent"] = (dims, llc.num_divergent.numpy())
        diagnostics = llc.diagnostics
        ds["llc_reliable"] = (dims, _reliable(llc))
        ds["llc_reasons"] = (dims, diagnostics["reasons"].transpose(*dims).values.astype(str))
        ds["llc_rhat"] = (dims, diagnostics["rhat"].transpose(*dims).values)
        ds["llc_mcse"] = (dims, diagnostics["mcse"].transpose(*dims).values)
        ds["llc_step_size"] = (dims, _per_anchor(llc, "step_size"))
        ds["llc_localization"] = (dims, _per_anchor(llc, "localization"))
        ds.attrs["nbeta"] = llc.nbeta
    if "kgon" in ds and _is_high_sparsity_tms(trajectory):
        ds["llc_theory"] = (dims, _kgon_theory(ds, W.shape[-1]))
    return ds


def _per_anchor(llc: LLCResult, name: str) -> np.ndarray:
    value = llc.calibration.get(name)
    if value is None:
        return np.full(tuple(llc.init_loss.shape), np.nan)
    return np.broadcast_to(np.asarray(value, dtype=float), tuple(llc.init_loss.shape)).copy()


#: A configuration counts as the regular k-gon critical point (for `llc_theory`) when its
#: `geometry` regular_residual is below this.
REGULAR_RESIDUAL = 0.1


def _is_high_sparsity_tms(trajectory: Trajectory) -> bool:
    """Chen et al. 2023's setting, where `theory.kgon_llc` applies: one active feature,
    m = 2, ReLU, a sampled bias, unit importance."""
    config = trajectory.config
    if config is None:
        return False
    imp = trajectory.importance
    return (
        config.data.active_features == 1
        and config.model.n_hidden == 2
        and config.model.activation == "relu"
        and config.model.bias
        and (imp is None or bool((imp == 1).all()))
    )


def _kgon_theory(ds: xr.Dataset, c: int) -> np.ndarray:
    """λ of `theory.kgon_llc` at checkpoints that sit at a regular k-gon, else NaN."""
    from tms_slt.theory import kgon_llc_of_label

    labels = ds["kgon"].values
    regular = ds["regular_residual"].values < REGULAR_RESIDUAL
    values = np.full(labels.shape, np.nan)
    # Only the labels of regular k-gons: each λ costs a solve and a Hessian check.
    for label in np.unique(labels[regular]):
        llc = kgon_llc_of_label(str(label), c)
        if llc is not None:
            values[regular & (labels == label)] = float(llc)
    return values


def eigen_summary(eigenvalues: np.ndarray, rtol: float = EIG_RTOL) -> tuple[np.ndarray, np.ndarray]:
    """Top gap and top multiplicity of ascending eigenvalues ``(..., m)``.

    gap = λ_m − λ_{m−1} (λ_m for m = 1); multiplicity = #{j : λ_j ≥ λ_m − rtol·λ_m}.
    A regular k-gon (k ≥ 3) in m = 2 has WWᵀ = (k/2)·I: gap 0, multiplicity 2.
    """
    ev = np.asarray(eigenvalues, dtype=np.float64)
    top = ev[..., -1]
    gap = top - ev[..., -2] if ev.shape[-1] > 1 else top.copy()
    mult = (ev >= (top - rtol * np.abs(top))[..., None]).sum(-1)
    return gap, mult.astype(np.int64)


def _reliable(llc: LLCResult) -> np.ndarray:
    """(checkpoint, instance) reliability flags of the LLC estimates (R-hat, drift, λ̂ ≥ 0)."""
    flags = llc.diagnostics["reliable"].transpose(*llc.dims)
    return np.asarray(flags.values, dtype=bool)
