"""The Chen et al. 2023 study end to end in quick mode, and `tms-slt figures` from its results."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tms_slt.io import read_dataset
from tms_slt.paper import build
from tms_slt.paper.chen_bayes import observed_crossing, observed_crossing_interval
from tms_slt.paper.chen_sgd import plateau_transitions

pytestmark = pytest.mark.experiments


@pytest.fixture(scope="module")
def quick(quick_figures) -> Path:
    return quick_figures("chen2023")


def test_every_figure_table_and_the_write_up_are_written(quick):
    for name in (
        "bayesian_comparison",
        "bayesian_transitions",
        "free_energy_ti",
        "sgd_plateaus",
        "sgd_transition_statistics",
    ):
        assert (quick / "figures" / f"{name}.png").stat().st_size > 10_000
    for name in ("kgon_c6", "bayesian_transitions", "free_energy_ti", "sgd_plateaus"):
        assert (quick / "tables" / f"{name}.md").read_text().startswith("# ")
    assert "quick-mode results" in (quick / "chen2023.md").read_text()


def test_kgon_table_has_every_variant_and_estimates_only_minima(quick):
    ds = read_dataset(quick / "data" / "kgon_table" / "results.nc")
    # k = 6: 1 variant; k < 6: 6 − k + 1 sign multisets of the unused biases.
    assert ds.sizes["row"] == 1 + 2 + 3 + 4 + 5
    saddle = ds["index"].values > 0
    assert np.isnan(ds["llc_hat"].values[saddle]).all()
    assert np.isfinite(ds["llc_hat"].values[~saddle]).all()
    six = ds["label"].values == "6"
    assert ds["llc_theory"].values[six].item() == 8.5
    table = (quick / "tables" / "kgon_c6.md").read_text()
    assert table.count("\n| ") == 1 + ds.sizes["row"]  # header + one row per critical point


def test_bayesian_prediction_and_posterior(quick):
    ds = read_dataset(quick / "data" / "bayesian_transitions" / "results.nc")
    theory = ds["crossing_n"].values[ds["crossing_source"].values == "theory"]
    assert theory == pytest.approx([601], abs=1)
    fractions = ds["count"] / ds["count"].sum("configuration")
    assert np.allclose(fractions.sum("configuration"), 1)
    # The tempered posterior's mean loss falls as n grows (d E[L]/dβ = −Var L ≤ 0).
    assert ds["mean_loss"].values[0] > ds["mean_loss"].values[-1]


def test_free_energy_ti_quick(quick):
    ds = read_dataset(quick / "data" / "free_energy_ti" / "results.nc")
    assert list(ds["basin"].values) == ["6", "5+", "5-"]
    # F_n increases with n (dF/dn = E[L] > 0) and the prior masses are probabilities.
    assert (np.diff(ds["free_energy"].values, axis=1) > 0).all()
    assert ((ds["prior_mass"] > 0) & (ds["prior_mass"] < 1)).all()
    text = (quick / "chen2023.md").read_text()
    assert "Laplace with every O(1) term" in text and "thermodynamic integration" in text


def test_observed_crossing_interpolates_in_log_n():
    import xarray as xr

    fr = xr.DataArray(
        [[0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.9, 0.1]],
        dims=("n", "configuration"),
        coords={"n": [10.0, 100.0, 1000.0, 10000.0], "configuration": ["6", "5-"]},
    )
    # 6 − 5 goes from −0.2 at n = 100 to +0.4 at n = 1000: a third of the way in log n.
    assert observed_crossing(fr) == pytest.approx(10 ** (2 + 1 / 3))
    assert np.isnan(observed_crossing(fr.sel(configuration=["5-", "6"])[::-1]))


def test_sgd_plateaus_descend(quick):
    ds = read_dataset(quick / "data" / "sgd_plateaus" / "results.nc")
    assert ds.sizes["instance"] == 8
    loss = ds["loss"].values
    assert (loss[-1] < loss[0]).all()  # every seed's loss fell
    plateaus, found = plateau_transitions(ds)
    assert found  # some seed changed configuration
    assert all(t["before"] != t["after"] for t in found)
    # Plateaus and transitions agree seed by seed: one more plateau than transitions.
    for i in range(8):
        n_plateaus = sum(p["instance"] == i for p in plateaus)
        assert n_plateaus == 1 + sum(t["instance"] == i for t in found)
    # Every plateau is matched to a critical point or says why not.
    assert all((p["match"] is None) == (p["reason"] != "matched") for p in plateaus)


def test_figures_rebuild_identically_from_saved_results(quick, tmp_path, digest):
    build("chen2023", quick / "data", tmp_path)
    assert digest(tmp_path) == digest(quick)


def test_observed_crossing_interval_brackets_and_widens():
    """d = f6 − f5 rises linearly in log n through 0 at n = 10^2.5; with SE(d) = |q1 − q2| the
    interval is where d ∓ 2 SE crosses 0: symmetric in log n about the crossing, and wider
    for a larger quarter difference."""
    import xarray as xr

    n = np.logspace(1, 4, 7)
    six = np.linspace(0.2, 0.8, 7)
    fr = xr.DataArray(
        np.stack([six, 1 - six], -1),
        dims=("n", "configuration"),
        coords={"n": n, "configuration": ["6", "5-"]},
    )
    centre = observed_crossing(fr)
    assert centre == pytest.approx(10**2.5)
    widths = []
    for q in (0.02, 0.05):
        first = xr.DataArray(six + q / 2, dims="n")
        second = xr.DataArray(six - q / 2, dims="n")
        lo, hi = observed_crossing_interval(fr, first, second)
        assert lo < centre < hi
        assert math.log(centre / lo) == pytest.approx(math.log(hi / centre), rel=1e-6)
        # d rises by 0.2 per half-decade of n: ± 2q in d is ± 2q / 0.2 half-decades.
        assert math.log10(hi / lo) == pytest.approx(2 * (2 * q / 0.2) * 0.5, rel=1e-6)
        widths.append(hi / lo)
    assert widths[1] > widths[0]
