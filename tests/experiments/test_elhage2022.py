"""The Elhage et al. 2022 study end to end in quick mode, and `tms-slt figures` from its results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tms_slt.cli import main
from tms_slt.io import read_dataset
from tms_slt.paper import build

pytestmark = pytest.mark.experiments


@pytest.fixture(scope="module")
def quick(quick_figures) -> Path:
    return quick_figures("elhage2022")


def test_every_figure_and_table_is_written(quick):
    names = (
        "superposition_vs_sparsity",
        "elhage_phase_diagram",
        "elhage_phase_diagram_3in2",
        "feature_dimensionality",
    )
    for name in names:
        assert (quick / "figures" / f"{name}.png").stat().st_size > 10_000
        assert (quick / "tables" / f"{name}.md").read_text().startswith("# ")


def test_superposition_results_have_the_papers_grid(quick):
    ds = read_dataset(quick / "data" / "superposition_vs_sparsity" / "results.nc")
    assert ds["W"].dims == ("activation", "sparsity", "seed", "hidden", "feature")
    assert list(ds["activation"].values) == ["linear", "relu"]
    assert ds.sizes["sparsity"] == 6 and ds.sizes["feature"] == 5
    table = (quick / "tables" / "superposition_vs_sparsity.md").read_text()
    assert table.count("\n| linear |") == 6 and table.count("\n| relu |") == 6


def test_linear_model_never_exceeds_m_features(quick):
    """A linear model has no superposition: at most m = 2 directions carry features, so
    ‖W‖²_F ≤ 2 (within training noise) at every sparsity, while ReLU can exceed it."""
    ds = read_dataset(quick / "data" / "superposition_vs_sparsity" / "results.nc")
    assert float(ds["feature_count"].sel(activation="linear").max()) < 2.6


def test_phase_diagram_labels_and_boundary(quick):
    ds = read_dataset(quick / "data" / "phase_diagram" / "results.nc")
    assert set(np.unique(ds["theory"].values)) <= {"feature_1", "feature_2", "antipodal"}
    # The exact diagram: superposition at the lowest density for every r; at full density
    # the more important feature takes the dimension.
    assert (ds["theory"].isel(density=0).values == "antipodal").all()
    top = ds["theory"].isel(density=-1)
    assert top.isel(relative_importance=0).item() == "feature_1"
    assert top.isel(relative_importance=-1).item() == "feature_2"
    assert "Agreement:" in (quick / "tables" / "elhage_phase_diagram.md").read_text()


def test_three_in_two_labels(quick):
    """Feature 3 is labelled by its own norm and the represented count, cell by cell."""
    import torch

    from tms_slt.geometry import column_norms

    ds = read_dataset(quick / "data" / "phase_diagram_3in2" / "results.nc")
    W = torch.tensor(ds["W"].values)
    rep = (column_norms(W) > 0.5).numpy()
    label = ds["label"].values.astype(str)
    assert ((label == "not represented") == ~rep[..., 2]).all()
    assert ((label == "superposition") == rep.all(-1)).all()


def test_dimensions_per_feature_fall_with_sparsity(quick):
    ds = read_dataset(quick / "data" / "feature_dimensionality" / "results.nc")
    dpf = ds["dims_per_feature"].values
    assert dpf[0] > dpf[-1]  # dense: ≈ one dimension per feature; sparse: many features share
    assert np.corrcoef(np.log(ds["inverse_density"].values), dpf)[0, 1] < -0.5


def test_figures_rebuild_identically_from_saved_results(quick, tmp_path, digest):
    build("elhage2022", quick / "data", tmp_path)
    assert digest(tmp_path) == digest(quick)


def test_unknown_study_and_missing_data_are_one_line(tmp_path, capsys):
    assert main(["figures", "nope"]) == 2
    assert main(["figures", "elhage2022", "--data", str(tmp_path), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "unknown study" in err[0] and "not found" in err[-1]
