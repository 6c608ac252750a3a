"""The moving-distribution and swish studies end to end in quick mode."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from tms_slt.io import read_dataset
from tms_slt.paper.moving import crossings, near_minimum, static_transition
from tms_slt.paper.swish import discrete_threshold
from tms_slt.schedules import DistributionSchedule

pytestmark = pytest.mark.experiments


@pytest.fixture(scope="module")
def quick(quick_figures) -> Path:
    return quick_figures("moving-distribution", "swish")


def test_files_are_written(quick):
    for name in ("moving_distribution", "hysteresis", "swish_vs_relu"):
        assert (quick / "figures" / f"{name}.png").stat().st_size > 10_000
    for name in ("moving-distribution", "swish"):
        assert "quick-mode results" in (quick / f"{name}.md").read_text()


def test_tracking_follows_the_schedule_it_was_given(quick):
    ds = read_dataset(quick / "data" / "tracking" / "results.nc")
    warmup = int(ds.attrs["warmup"])
    for run, low, high in (("n5_up_medium", 0.6, 0.97), ("c6_down_medium", 1.0, 0.45)):
        v = ds[f"{run}_schedule_value"].values
        step = ds[f"{run}_checkpoint"].values
        assert np.allclose(v[step <= warmup], low)  # held during the warm-up
        far = v[np.argmax(np.abs(v - low))]
        assert abs(far - high) < 0.2 * abs(high - low) and v[-1] == pytest.approx(low)
        assert {str(d) for d in ds[f"{run}_transition_driver"].values} <= {"learning", "schedule"}
        # The schedule is stored with the results and reloads to the same q_t.
        schedule = DistributionSchedule.from_dict(json.loads(ds.attrs[f"{run}_schedule"]))
        for t, expected in zip(step, v, strict=True):
            q = schedule(int(t))
            got = float(q.sparsity) if run.startswith("n5") else float(q.importance[1])
            assert got == pytest.approx(expected, abs=1e-6)
    # λ̂ and the susceptibility χ at every 4th checkpoint of the LLC run, with error bars.
    # χ only where the checkpoint sits near a minimum of its own L_n (else it would describe
    # another configuration).
    llc = ds["n5_down_medium_llc_mean"].values
    chi, chi_se = ds["n5_down_medium_chi"].values, ds["n5_down_medium_chi_se"].values
    assert np.isfinite(llc[::4]).all() and np.isnan(llc[1::4]).all()
    near = near_minimum(ds, "n5_down_medium")
    assert np.array_equal(np.isfinite(chi), near) and (chi_se[near] > 0).all()
    # c = 6: one active feature per sample throughout.
    c6 = DistributionSchedule.from_dict(json.loads(ds.attrs["c6_down_medium_schedule"]))
    x = c6(warmup + 10).sample(20, generator=torch.Generator().manual_seed(0))
    assert ((x > 0).sum(-1) == 1).all()


def test_crossings_are_where_membership_changes():
    # One instance: k = 5 at the ramp's start, lost on the way down, back on the return.
    k = np.array([5, 5, 5, 4, 4, 4, 5, 5])
    v = np.array([0.97, 0.97, 0.9, 0.8, 0.6, 0.8, 0.9, 0.97])
    ds = xr.Dataset(
        {
            "r_k": (("r_checkpoint", "instance"), k[:, None]),
            "r_schedule_value": ("r_checkpoint", v),
        },
        coords={"r_checkpoint": np.arange(8) * 10, "instance": [0]},
    )
    (c,) = crossings(ds, "r", warmup=10)
    assert c["pentagon_at_start"] and c["k_at_turn"] == 4
    assert (c["value_out"], c["step_out"]) == (0.8, 30)
    assert (c["value_back"], c["step_back"]) == (0.9, 60)
    # Held (a step, no way back): the whole run after the step is the way out.
    held = ds.assign(r_schedule_value=("r_checkpoint", np.array([0.6] + [0.97] * 7)))
    held["r_k"] = (("r_checkpoint", "instance"), np.array([4, 4, 4, 4, 4, 4, 5, 5])[:, None])
    (c,) = crossings(held, "r", warmup=10)
    assert not c["pentagon_at_start"] and c["step_out"] == 60 and c["value_back"] is None
    # An instance that never leaves has neither crossing.
    ds["r_k"] = (("r_checkpoint", "instance"), np.full((8, 1), 5))
    (c,) = crossings(ds, "r", warmup=10)
    assert c["value_out"] is None and c["value_back"] is None


def test_static_transition_is_where_the_median_reaches_five():
    k = np.array([[[4, 4]], [[4, 5]], [[5, 5]]]).transpose(1, 0, 2)  # (ckpt=1, value=3, seed=2)
    for parameter, expected in (
        ("sparsity", 1 - math.sqrt(0.2 * 0.1)),  # midpoint in density between 0.8 and 0.9
        ("importance_decay", math.sqrt(0.8 * 0.9)),  # geometric midpoint in r
    ):
        ds = xr.Dataset(
            {"x_static_k": (("static_checkpoint", "x_value", "seed"), k)},
            coords={"x_value": [0.6, 0.8, 0.9], "static_checkpoint": [0], "seed": [0, 1]},
            attrs={"x_parameter": parameter},
        )
        # Median 4, 4.5, 5: reached at the third value.
        assert static_transition(ds, "x") == pytest.approx(expected)


def test_discrete_threshold():
    gamma = np.array([1.0, 10.0, 100.0, math.inf])
    assert discrete_threshold(gamma, np.array([0.0, 0.97, 1.0, 1.0]), 20) == 10.0
    assert math.isnan(discrete_threshold(gamma, np.array([0.0, 0.0, 0.2, 1.0]), 20))
    # Not monotone: a dip at 100 breaks the run, the threshold is the γ after it.
    assert math.isnan(discrete_threshold(gamma, np.array([1.0, 1.0, 0.0, 1.0]), 20))
    # ReLU itself not discrete: no reference to return to.
    assert math.isnan(discrete_threshold(gamma, np.array([0.3, 0.3, 0.3, 0.3]), 20))
