"""The moving-distribution and swish studies end to end in quick mode."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tms_slt.io import read_dataset
from tms_slt.paper.moving import crossings, static_transition
from tms_slt.paper.swish import discrete_threshold

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
    s = ds["medium_schedule_sparsity"].values
    warmup = int(ds.attrs["warmup"])
    step = ds["medium_checkpoint"].values
    assert np.allclose(s[step <= warmup], 0.6)  # held during the warm-up
    assert s.max() > 0.9 and s[-1] == pytest.approx(0.6)  # up and back
    assert {str(d) for d in ds["medium_transition_driver"].values} <= {"learning", "schedule"}
    # The schedule is stored with the results and reloads to the same q_t.
    import json

    from tms_slt.schedules import DistributionSchedule

    schedule = DistributionSchedule.from_dict(json.loads(ds.attrs["medium_schedule"]))
    for t, expected in zip(step, s, strict=True):
        assert float(schedule(int(t)).sparsity) == pytest.approx(expected, abs=1e-6)
    # The crossings read off the series are where k actually changes.
    for c in crossings(ds, "medium", warmup):
        if c["step_up"] is not None:
            k = ds["medium_k"].sel(instance=c["instance"], medium_checkpoint=c["step_up"])
            assert int(k) >= 5


def test_static_transition_is_where_the_median_reaches_five():
    k = np.array([[[4, 4]], [[4, 5]], [[5, 5]]]).transpose(1, 0, 2)  # (ckpt=1, S=3, seed=2)
    ds = xr.Dataset(
        {"static_k": (("static_checkpoint", "sparsity", "seed"), k)},
        coords={"sparsity": [0.6, 0.8, 0.9], "static_checkpoint": [0], "seed": [0, 1]},
    )
    # Median 4, 4.5, 5: reached at S = 0.9; midpoint in density with 0.8.
    assert static_transition(ds) == pytest.approx(1 - math.sqrt(0.2 * 0.1))


def test_discrete_threshold():
    gamma = np.array([1.0, 10.0, 100.0, math.inf])
    assert discrete_threshold(gamma, np.array([0.0, 0.97, 1.0, 1.0]), 20) == 10.0
    assert math.isnan(discrete_threshold(gamma, np.array([0.0, 0.0, 0.2, 1.0]), 20))
    # Not monotone: a dip at 100 breaks the run, the threshold is the γ after it.
    assert math.isnan(discrete_threshold(gamma, np.array([1.0, 1.0, 0.0, 1.0]), 20))
    # ReLU itself not discrete: no reference to return to.
    assert math.isnan(discrete_threshold(gamma, np.array([0.3, 0.3, 0.3, 0.3]), 20))
