"""Unit tests for tms_slt.transitions: change points, merging, sweeps, Bayesian crossings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import xarray as xr

from tms_slt.transitions import (
    Transition,
    bayesian_crossings,
    change_points,
    critical_points,
    detect_dynamical,
    detect_run,
    detect_sweep,
    format_transitions,
    free_energy,
    noise_sigma,
    posterior_phase_fractions,
    refine_boundary,
    two_feature_losses,
    two_feature_phase,
)
from tms_slt.transitions.dynamical import plateau_segments, stable_labels
from tms_slt.transitions.phase_diagram import antipodal_loss

#: Planted change points must be recovered within this many indices.
TOL = 1


def _planted(rng: np.random.Generator, T: int = 60, jumps: int = 2, size: float = 6.0):
    locs = np.sort(rng.choice(np.arange(8, T - 8, 10), size=jumps, replace=False))
    x = rng.normal(size=T)
    for i in locs:
        x[i:] += size * rng.choice([-1.0, 1.0])
    return x, locs


@pytest.mark.parametrize("seed", range(10))
def test_change_points_recover_planted_steps(seed: int) -> None:
    x, locs = _planted(np.random.default_rng(seed))
    found = change_points(x)
    assert len(found) == len(locs)
    assert np.all(np.abs(np.array(found) - locs) <= TOL)


def test_noise_sigma_is_consistent_and_ignores_steps() -> None:
    rng = np.random.default_rng(0)
    x = 0.3 * rng.normal(size=4000)
    assert noise_sigma(x) == pytest.approx(0.3, rel=0.1)
    x[2000:] += 50.0  # a jump is a pair of outliers of Δ²
    assert noise_sigma(x) == pytest.approx(0.3, rel=0.1)


def test_constant_and_short_series_have_no_change_points() -> None:
    assert change_points(np.ones(30)) == []
    assert change_points(np.array([0.0, 1.0, 0.0])) == []
    with pytest.raises(ValueError, match="non-finite"):
        change_points(np.array([0.0, np.nan, 1.0, 2.0]))


def test_critical_points_find_a_bump_and_ignore_noise() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(50)
    bump = 10 * np.exp(-0.5 * ((t - 30) / 4.0) ** 2) + 0.3 * rng.normal(size=50)
    found = critical_points(bump)
    assert len(found) == 1 and abs(found[0] - 30) <= 2
    assert critical_points(0.3 * rng.normal(size=50)) == []


def test_stable_labels_ignore_flicker() -> None:
    stable, changes = stable_labels(["3", "3", "4", "3", "3", "4", "4", "4", "5"], 2)
    assert changes == [5, 8]  # the final label counts even though the series ends
    assert list(stable) == ["3"] * 5 + ["4"] * 3 + ["5"]


def _synthetic(T: int = 40, at: int = 20, seed: int = 0, *, label_change: bool = True):
    """A tracked-like dataset with one planted transition at checkpoint `at`."""
    rng = np.random.default_rng(seed)
    steps = np.unique(np.round(np.geomspace(1, 5000, T)).astype(int))
    T = steps.size
    up = (np.arange(T) >= at).astype(float)
    labels = np.where(up > 0, "5+", "4++") if label_change else np.full(T, "4++")
    loss = np.exp(np.log(0.2) - 0.7 * up + 0.02 * rng.normal(size=T))
    fc = 4.0 + up + 0.02 * rng.normal(size=T)
    llc = 2.0 + 1.5 * up + 0.1 * rng.normal(size=T)
    dims = ("checkpoint", "instance")
    return xr.Dataset(
        {
            "loss": (dims, loss[:, None]),
            "feature_count": (dims, fc[:, None]),
            "llc_mean": (dims, llc[:, None]),
            "llc_reliable": (dims, np.ones((T, 1), dtype=bool)),
            "kgon": (dims, labels[:, None]),
        },
        coords={"checkpoint": steps, "instance": [0]},
    )


def test_detect_dynamical_merges_agreeing_signals() -> None:
    ds = _synthetic(at=20)
    (t,) = detect_dynamical(ds)
    steps = ds["checkpoint"].values
    assert t.interval[0] <= steps[19] and t.interval[1] >= steps[20]
    assert (t.before, t.after) == ("4++", "5+")
    assert set(t.signals) == {"configuration", "loss", "feature_count", "llc"}
    assert t.confidence == pytest.approx(1.0)
    assert t.delta_loss < 0 and t.delta_llc > 1.0 and t.delta_feature_count == pytest.approx(1, 0.1)
    assert t.driver == "learning" and t.note == ""


def test_loss_step_without_configuration_change_is_flagged() -> None:
    (t,) = detect_dynamical(_synthetic(label_change=False))
    assert t.before == t.after == "4++"
    assert "configuration" not in t.signals
    assert "without a configuration change" in t.note
    assert t.confidence == pytest.approx(0.75)


def test_unreliable_llc_lowers_its_weight() -> None:
    ds = _synthetic(label_change=False)
    ds["llc_reliable"][:] = False
    (t,) = detect_dynamical(ds)
    assert t.confidence == pytest.approx(2 / 3)  # llc weight 0: loss + |W|^2 of 3 signals


def test_schedule_driver() -> None:
    ds = _synthetic(at=20)
    step = float(ds["checkpoint"][20])
    (t,) = detect_dynamical(ds, schedule=(step / 2, step))
    assert t.driver == "schedule"
    (t,) = detect_dynamical(ds, schedule=(1.0, 2.0))
    assert t.driver == "learning"
    with pytest.raises(ValueError, match="pairs"):
        detect_dynamical(ds, schedule=(5.0, 1.0))


def test_transition_to_dict_is_json_and_validates() -> None:
    (t,) = detect_dynamical(_synthetic())
    d = json.loads(json.dumps(t.to_dict()))
    assert d["before"] == "4++" and isinstance(d["interval"], list)
    assert "4++" in format_transitions([t])
    assert format_transitions([]) == "no transitions detected"
    with pytest.raises(ValueError):
        Transition(kind="sweep", axis="x", location=0.0, interval=(1.0, 0.0))
    with pytest.raises(ValueError):
        Transition(kind="sweep", axis="x", location=0.0, interval=(0.0, 1.0), confidence=2.0)


def test_detect_sweep_best_replicate_and_other_axes() -> None:
    s = np.linspace(0.0, 0.9, 10)
    r = np.array([0.5, 2.0])
    lab = np.where(s[None, :, None] < 0.45, "a", "b").repeat(2, 0).repeat(3, 2).astype(object)
    loss = np.ones(lab.shape)
    lab[:, 2, 0] = "noise"  # a worse replicate: ignored by the lowest-loss reduction
    loss[:, 2, 0] = 9.0
    ds = xr.Dataset(
        {"kgon": (("r", "s", "seed"), lab.astype(str)), "loss": (("r", "s", "seed"), loss)},
        coords={"r": r, "s": s, "seed": [0, 1, 2]},
    )
    found = detect_sweep(ds, "s")
    assert len(found) == 2
    for t in found:
        assert t.interval == (pytest.approx(0.4), pytest.approx(0.5))
        assert (t.before, t.after) == ("a", "b")
    assert {dict(t.coords)["r"] for t in found} == {0.5, 2.0}
    with pytest.raises(ValueError, match="not a dimension"):
        detect_sweep(ds, "nope")


def test_detect_sweep_ignores_model_dims_of_a_collected_sweep() -> None:
    """Per-model coordinates (feature, hidden) are not sweep axes: one transition, not one
    per feature; with `sweep_axes` recorded by `sweep collect`, only those are scanned."""
    s = np.linspace(0.0, 0.9, 10)
    lab = np.where(s < 0.45, "a", "b")
    W = np.zeros((10, 2, 4))
    ds = xr.Dataset(
        {
            "kgon": (("s",), lab),
            "loss": (("s",), np.ones(10)),
            "W": (("s", "hidden", "feature"), W),
        },
        coords={"s": s, "hidden": [0, 1], "feature": [0, 1, 2, 3]},
    )
    assert len(detect_sweep(ds, "s")) == 1
    ds.attrs["sweep_axes"] = '["s"]'
    assert len(detect_sweep(ds, "s")) == 1


def test_refine_boundary_brackets_the_threshold() -> None:
    calls = []

    def fn(x: float) -> str:
        calls.append(x)
        return "low" if x < 0.3137 else "high"

    t = refine_boundary(fn, 0.0, 1.0, tol=1e-3)
    assert t.interval[0] <= 0.3137 <= t.interval[1] and t.interval[1] - t.interval[0] <= 1e-3
    assert (t.before, t.after) == ("low", "high") and len(calls) <= 13
    t = refine_boundary(lambda x: "a" if x < 3.0 else "b", 0.1, 100.0, tol=0.01, log=True)
    assert t.interval[0] <= 3.0 <= t.interval[1]
    with pytest.raises(ValueError, match="same label"):
        refine_boundary(lambda x: "a", 0.0, 1.0, tol=0.1)


def test_bayesian_crossing_solves_the_free_energy_equation() -> None:
    losses, llcs = {"4": 0.10, "5": 0.06}, {"4": 2.0, "5": 3.5}
    (t,) = bayesian_crossings(losses, llcs)
    n = t.location
    assert free_energy(0.10, 2.0, n) == pytest.approx(free_energy(0.06, 3.5, n), rel=1e-9)
    assert (t.before, t.after) == ("4", "5")
    assert t.delta_loss == pytest.approx(-0.04) and t.delta_llc == pytest.approx(1.5)


def test_bayesian_crossings_follow_the_lower_envelope() -> None:
    rng = np.random.default_rng(3)
    losses = dict(zip("abcd", rng.uniform(0.01, 0.3, 4), strict=True))
    llcs = dict(zip("abcd", rng.uniform(0.5, 6.0, 4), strict=True))
    found = bayesian_crossings(losses, llcs, n_min=2, n_max=1e8)
    grid = np.geomspace(2, 1e8, 20001)
    F = np.stack([free_energy(losses[k], llcs[k], grid) for k in "abcd"])
    best = np.array(list("abcd"))[F.argmin(0)]
    switches = np.flatnonzero(best[1:] != best[:-1])
    assert len(found) == len(switches)
    for t, i in zip(found, switches, strict=True):
        assert grid[i] <= t.location <= grid[i + 1]
        assert (t.before, t.after) == (best[i], best[i + 1])


def test_bayesian_crossings_with_constants_follow_the_lower_envelope() -> None:
    """With O(1) terms c_k (e.g. −log prior) the envelope of n L + λ log n + c is found too,
    the convex/concave split of h still holding."""
    rng = np.random.default_rng(5)
    losses = dict(zip("abcd", rng.uniform(0.01, 0.3, 4), strict=True))
    llcs = dict(zip("abcd", rng.uniform(0.5, 6.0, 4), strict=True))
    consts = dict(zip("abcd", rng.uniform(-5.0, 5.0, 4), strict=True))
    found = bayesian_crossings(losses, llcs, constants=consts, n_min=2, n_max=1e8)
    grid = np.geomspace(2, 1e8, 20001)
    F = np.stack([free_energy(losses[k], llcs[k], grid, consts[k]) for k in "abcd"])
    best = np.array(list("abcd"))[F.argmin(0)]
    switches = np.flatnonzero(best[1:] != best[:-1])
    assert len(found) == len(switches)
    for t, i in zip(found, switches, strict=True):
        assert grid[i] <= t.location <= grid[i + 1]


def test_bayesian_crossing_of_the_c6_pentagon_and_hexagon() -> None:
    """Chen et al. 2023's 5 → 6 crossing: n ≈ 601 with the standard normal prior's
    ½‖w*‖², 445 without, from the exact losses and λ of `theory` (the prior term computed
    here from the k-gon's parameters, independently of the paper)."""
    from tms_slt.theory import kgon_critical_point, kgon_llc, kgon_loss

    labels = {"5-": (5, "-"), "6": (6, "-")}
    losses = {k: kgon_loss(kv[0], 6, variant=kv[1]) for k, kv in labels.items()}
    llcs = {k: float(kgon_llc(kv[0], 6, kv[1])) for k, kv in labels.items()}
    prior = {}
    for k, (kk, v) in labels.items():
        W, b = kgon_critical_point(kk, 6, variant=v)
        prior[k] = 0.5 * float((W**2).sum() + (b**2).sum())
    (with_prior,) = bayesian_crossings(losses, llcs, constants=prior)
    (without,) = bayesian_crossings(losses, llcs)
    assert (with_prior.before, with_prior.after) == ("5-", "6")
    assert with_prior.location == pytest.approx(601, abs=1)
    assert without.location == pytest.approx(445, abs=1)
    with pytest.raises(ValueError, match="constants"):
        bayesian_crossings(losses, llcs, constants={"6": 0.0})


def test_plateau_segments_debounce_flicker() -> None:
    labels = ["3", "3", "4", "3", "3", "4", "4", "4", "5"]
    assert plateau_segments(labels) == [(0, 5, "3"), (5, 8, "4"), (8, 9, "5")]
    assert plateau_segments([]) == []


def test_posterior_phase_fractions() -> None:
    fr = posterior_phase_fractions(np.array([["5+", "4++"], ["5+", "5+"]]))
    assert fr == {"5+": 0.75, "4++": 0.25}
    with pytest.raises(ValueError):
        posterior_phase_fractions([])


def _mc_two_feature(W: np.ndarray, b: np.ndarray, r: float, p: float, n: int = 400_000):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(n, 2)) * (rng.uniform(size=(n, 2)) < p)
    out = np.maximum(x @ W.T @ W + b, 0.0)
    per = ((x - out) ** 2 * np.array([1.0, r])).sum(1)
    return per.mean(), per.std() / math.sqrt(n)


@pytest.mark.parametrize(("r", "p"), [(0.5, 0.1), (2.0, 0.4), (1.0, 0.9)])
def test_two_feature_losses_match_monte_carlo(r: float, p: float) -> None:
    params = np.array([1.1, 0.8, -0.15, -0.05])
    a, c, b1, b2 = params
    exact = float(antipodal_loss(params, r, p))
    mc, se = _mc_two_feature(np.array([[a, -c]]), np.array([b1, b2]), r, p)
    assert abs(exact - mc) < 4 * se
    single = two_feature_losses(r, p)["feature_1"]
    mc, se = _mc_two_feature(np.array([[1.0, 0.0]]), np.array([0.0, p / 2]), r, p)
    assert abs(float(single) - mc) < 4 * se


def test_two_feature_phase_regions() -> None:
    assert two_feature_phase(0.5, 1.0) == "feature_1"  # dense: only the important feature
    assert two_feature_phase(2.0, 1.0) == "feature_2"
    assert two_feature_phase(0.5, 0.05) == "antipodal"  # sparse: superposition


def test_detect_run_writes_json_and_figure(tmp_path) -> None:
    from tms_slt.io import write_dataset

    write_dataset(tmp_path / "results.nc", _synthetic())
    found = detect_run(tmp_path)
    assert len(found) == 1
    data = json.loads((tmp_path / "transitions.json").read_text())
    assert data["transitions"][0]["after"] == "5+"
    assert (tmp_path / "transitions.png").stat().st_size > 0
    with pytest.raises(FileNotFoundError):
        detect_run(tmp_path / "missing")


def test_plots_build_figures() -> None:
    from matplotlib.figure import Figure

    from tms_slt.plots import plot_eigenvalues, plot_phase_diagram

    ds = _synthetic()
    ds["gram_eigenvalues"] = (
        ("checkpoint", "instance", "eig"),
        np.ones((ds.sizes["checkpoint"], 1, 2)),
    )
    assert isinstance(plot_eigenvalues(ds, transitions=detect_dynamical(ds)), Figure)
    s, r = np.linspace(0.1, 1, 5), np.array([0.5, 2.0])
    labels = xr.DataArray(
        np.where(s[None, :] < 0.5, "antipodal", "feature_1").repeat(2, 0),
        dims=("r", "s"),
        coords={"r": r, "s": s},
    )
    found = detect_sweep(labels.to_dataset(name="kgon"), "s")
    assert isinstance(plot_phase_diagram(labels, transitions=found), Figure)


def test_posterior_configurations_counts_every_kept_draw() -> None:
    import torch

    from tms_slt.geometry import regular_kgon
    from tms_slt.transitions.bayesian import posterior_configurations

    five, four = regular_kgon(5, 5), regular_kgon(4, 5)
    # (index=2, chain=2, kept_draw=4): index 0 all 5-gons; index 1 one chain of each
    W = torch.stack([five, five, five, five, four, four, four, four])
    W = torch.stack([five.expand(8, 2, 5), W]).reshape(2, 2, 4, 2, 5)
    b = torch.full((5,), -0.1)  # a fixed bias, broadcast to every draw
    ds = posterior_configurations(W, b, dims=("n",), coords={"n": [10, 1000]})
    assert ds["fraction"].dims == ("n", "configuration")
    assert ds["configuration"].values.tolist() == ["5", "4-"]  # most frequent overall first
    np.testing.assert_allclose(ds["fraction"].sel(n=10).values, [1.0, 0.0])
    np.testing.assert_allclose(ds["fraction"].sel(n=1000).values, [0.5, 0.5])
    np.testing.assert_allclose(ds["fraction"].sum("configuration").values, 1.0)
    assert ds["count"].sel(n=1000, configuration="4-").item() == 4
    # the same numbers as posterior_phase_fractions on one index, after the burn-in
    late = posterior_configurations(W, b, num_burnin=3)
    assert posterior_phase_fractions(late["label"].isel(dim_0=1).values) == {"4-": 0.5, "5": 0.5}
    assert late.attrs["num_samples"] == 2
    with pytest.raises(ValueError, match="num_burnin"):
        posterior_configurations(W, b, num_burnin=4)


def test_posterior_mass_leaves_the_anchor_class_at_small_nbeta() -> None:
    """At a 5-gon minimum of L_n, with weak localization (γ = 1): at large nβ the posterior
    stays in the anchor's class; at nβ = 1 it is close to the prior N(w*, γ⁻¹ I) and spreads
    over neighbouring classes, so the fraction in the anchor's class must fall."""
    import torch

    from tms_slt.data import TMSDistribution
    from tms_slt.geometry import kgon_labels, regular_kgon
    from tms_slt.models import get_activation
    from tms_slt.models import loss_and_grad as tms_loss_and_grad
    from tms_slt.sampling.llc import estimate_llc
    from tms_slt.transitions.bayesian import posterior_configurations

    data = TMSDistribution(5, active_features=1).sample(
        1000, generator=torch.Generator().manual_seed(0)
    )
    W, b = regular_kgon(5, 5), torch.full((5,), -0.2)
    relu = get_activation("relu")
    for _ in range(300):  # full-batch GD to the 5-gon minimum of L_n
        _, dW, db = tms_loss_and_grad(W, b, data, None, relu)
        W, b = W - 0.5 * dW, b - 0.5 * db
    anchor = str(kgon_labels(W, b))
    assert anchor == "5"

    def fraction_in_anchor_class(nbeta: float, step_size: float) -> float:
        result = estimate_llc(
            (W, b),
            dataset=data,
            nbeta=nbeta,
            step_size=step_size,
            localization=1.0,
            num_chains=4,
            num_draws=400,
            num_burnin=100,
            batch_size=200,
            keep_params_every=20,
            generator=torch.Generator().manual_seed(1),
            progress=False,
        )
        ds = posterior_configurations(*result.param_trace, num_burnin=5)
        return (
            float(ds["fraction"].sel(configuration=anchor)) if anchor in ds.configuration else 0.0
        )

    cold = fraction_in_anchor_class(1e3, 1e-4)
    hot = fraction_in_anchor_class(1.0, 1e-2)
    assert cold >= 0.95
    assert hot <= 0.8
    assert hot < cold
