"""`paper/`: figures and tables built from saved results alone (no training, no sampling).

Each study's experiment scripts (experiments/<study>/*.py) save results.nc + meta.json into
`paper/data/<study>/<name>/`; `build(study, data_dir, out_dir)` turns each saved result into
`figures/<name>.png` and `tables/<name>.md` under `out_dir` (default `paper/`), and returns
the numbers the study's write-up quotes. Deterministic: the same results give the same files
(PNG metadata carries no date). `tms-slt figures` is the command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from tms_slt.io import RESULTS_FILE, atomic_write, atomic_write_text, read_dataset

#: The sticky feature dimensionalities of Elhage et al. 2022 (tetrahedron 3/4, triangle 2/3,
#: digon 1/2, pentagon 2/5, square antiprism 3/8), and 1 (a dedicated dimension).
STICKY_VALUES = (1.0, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 3 / 8)
#: |D_i − sticky| below this counts as sticky.
STICKY_TOLERANCE = 0.02
#: Features with ‖W_i‖ above this count as represented.
REPRESENTED = 0.5
FIGURE_DPI = 120


@dataclass(frozen=True)
class Built:
    """What one figure builder wrote and the numbers it measured."""

    files: tuple[Path, ...]
    numbers: dict[str, Any]


def experiment_config(path: Path, out: Path, overrides: dict[str, Any]) -> Any:
    """An experiment's TOML config with `overrides` (its quick mode), after refusing an `out`
    that already holds results: before any training, not after."""
    from tms_slt.config import load_config, with_overrides
    from tms_slt.io import RunExistsError

    if (Path(out) / RESULTS_FILE).exists():
        raise RunExistsError(f"{out} already holds results; delete it to rerun, or pass --out")
    config = load_config(path)
    return with_overrides(config, overrides) if overrides else config


def experiment_main(
    run: Callable[..., Path], default_out: Path, doc: str, argv: list[str] | None = None
) -> int:
    """The command line every experiment script shares: `--quick` (seconds; needs `--out`,
    quick results never go into paper/) and `--out DIR` (default `default_out`); an
    existing result is refused with one line before any training."""
    import argparse

    from tms_slt.io import RunExistsError

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds, for CI")
    parser.add_argument("--out", type=Path, help="results directory (must not hold results)")
    args = parser.parse_args(argv)
    if args.quick and args.out is None:
        parser.error("--quick needs --out (quick results never go into paper/)")
    try:
        out = run(args.out or default_out, quick=args.quick)
    except RunExistsError as err:
        parser.exit(1, f"{parser.prog}: {err}\n")
    print(f"wrote {out}")
    return 0


def _save_figure(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # No date or software version in the PNG: rebuilding from the same results is byte-equal.
    return atomic_write(
        path, lambda p: fig.savefig(p, dpi=FIGURE_DPI, format="png", metadata={"Software": None})
    )


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# Elhage et al. 2022
# ---------------------------------------------------------------------------------------


def superposition_vs_sparsity(ds: xr.Dataset, out: Path) -> Built:
    """The first figure (WᵀW, b and W's columns per sparsity, linear and ReLU) and a table of
    features represented, ‖W‖²_F and the k-gon label (seed 0; the table's ranges over seeds)."""
    from tms_slt.plots import plot_superposition_grid

    fig_path = _save_figure(
        plot_superposition_grid(ds.isel(seed=0)), out / "figures" / "superposition_vs_sparsity.png"
    )
    rows, numbers = [], {}
    for act in ds["activation"].values:
        for s in ds["sparsity"].values:
            p = ds.sel(activation=act, sparsity=s)
            represented = p["represented"].values
            labels = sorted(set(p["kgon"].values.astype(str).tolist()))
            rows.append(
                [
                    act,
                    f"{s:g}",
                    _span(represented, "d"),
                    _span(p["feature_count"].values, ".2f"),
                    ", ".join(labels),
                    _span(p["loss"].values, ".4f"),
                ]
            )
            numbers[f"{act}_S{s:g}_represented"] = int(np.median(represented))
    table = (
        "# Superposition against sparsity (n = 5, m = 2, importance 0.9^i)\n\n"
        "Generated by `tms-slt figures elhage2022` from "
        "`paper/data/elhage2022/superposition_vs_sparsity`. Represented: ‖W_i‖ > 0.5; ranges "
        f"over {ds.sizes['seed']} seeds.\n\n"
        + _table(["model", "S", "features represented", "‖W‖²_F", "k-gon label", "loss"], rows)
    )
    table_path = atomic_write_text(out / "tables" / "superposition_vs_sparsity.md", table)
    return Built((fig_path, table_path), numbers)


def phase_diagram(ds: xr.Dataset, out: Path) -> Built:
    """Empirical (trained, majority over seeds) beside exact phase diagram, the exact
    superposition boundary on both; agreement fraction and boundary distance."""
    from tms_slt.plots import plot_two_feature_phase_diagrams

    fig_path = _save_figure(
        plot_two_feature_phase_diagrams(ds), out / "figures" / "elhage_phase_diagram.png"
    )
    emp, th = ds["empirical"].values.astype(str), ds["theory"].values.astype(str)
    agree = float((emp == th).mean())
    distance = _boundary_distance(ds)
    numbers = {
        "agreement": agree,
        "cells": int(emp.size),
        "boundary_distance_decades_median": distance,
    }
    counts = {
        name: [
            int(((emp == name) & (th == t)).sum()) for t in ("feature_1", "feature_2", "antipodal")
        ]
        for name in sorted(set(emp.ravel().tolist()) | {"feature_1", "feature_2", "antipodal"})
    }
    rows = [[name, *c] for name, c in counts.items()]
    table = (
        "# Two features in one dimension: trained vs exact phase\n\n"
        "Generated by `tms-slt figures elhage2022` from `paper/data/elhage2022/phase_diagram`. "
        "Rows: the trained label (majority over seeds); columns: the exact phase.\n\n"
        + _table(["trained \\ exact", "feature_1", "feature_2", "antipodal"], rows)
        + f"\nAgreement: {agree:.1%} of {emp.size} cells. Median distance between the trained and "
        f"the exact superposition boundary along the density axis: {distance:.2f} decades.\n"
    )
    table_path = atomic_write_text(out / "tables" / "elhage_phase_diagram.md", table)
    return Built((fig_path, table_path), numbers)


def _boundary_distance(ds: xr.Dataset) -> float:
    """Median over r of |log10 p_trained − log10 p_exact|, p_trained the geometric midpoint of
    the first density cells where the trained label turns to or from "antipodal"."""
    p = ds["density"].values
    out = []
    for i, exact in enumerate(ds["boundary_density"].values):
        row = ds["empirical"].values[i].astype(str) == "antipodal"
        change = np.flatnonzero(row[:-1] != row[1:])
        if np.isfinite(exact) and change.size:
            trained = np.sqrt(p[change[0]] * p[change[0] + 1])
            out.append(abs(np.log10(trained / exact)))
    return float(np.median(out)) if out else float("nan")


def feature_dimensionality(ds: xr.Dataset, out: Path) -> Built:
    """Dimensions per feature and every represented feature's D_i against 1/(1 − S), with
    the sticky values marked; the sticky fraction and the plateaus at 1 and 1/2."""
    from tms_slt.plots import plot_feature_dimensionality

    fig_path = _save_figure(
        plot_feature_dimensionality(ds, sticky=STICKY_VALUES),
        out / "figures" / "feature_dimensionality.png",
    )
    D = ds["feature_dimensionality"].values
    represented = ds["feature_norm"].values > REPRESENTED
    distance = np.min(np.abs(D[..., None] - np.asarray(STICKY_VALUES)), axis=-1)
    sticky = (distance < STICKY_TOLERANCE) & represented
    fraction = float(sticky.sum() / max(represented.sum(), 1))
    x = ds["inverse_density"].values
    dpf = ds["dims_per_feature"].values
    plateau_1 = x[np.abs(dpf - 1) < 0.05]
    plateau_half = x[np.abs(dpf - 0.5) < 0.05]
    numbers = {
        "sticky_fraction": fraction,
        "represented_features": int(represented.sum()),
        "plateau_1": [float(v) for v in plateau_1],
        "plateau_half": [float(v) for v in plateau_half],
    }
    rows = [
        [f"{xi:.3g}", f"{d:.3f}", int(r.sum()), f"{float(s.sum() / max(r.sum(), 1)):.0%}"]
        for xi, d, r, s in zip(x, dpf, represented, sticky, strict=True)
    ]
    table = (
        f"# Feature dimensionality (n = {ds.attrs.get('n_features')}, "
        f"m = {ds.attrs.get('n_hidden')})\n\n"
        "Generated by `tms-slt figures elhage2022` from "
        "`paper/data/elhage2022/feature_dimensionality`. Sticky: |D_i − v| < 0.02 for v in "
        "1, 3/4, 2/3, 1/2, 2/5, 3/8, among represented features (‖W_i‖ > 0.5).\n\n"
        + _table(["1/(1−S)", "m/‖W‖²_F", "represented", "sticky"], rows)
        + f"\nSticky overall: {fraction:.1%} of {int(represented.sum())} represented features.\n"
    )
    table_path = atomic_write_text(out / "tables" / "feature_dimensionality.md", table)
    return Built((fig_path, table_path), numbers)


def _span(values: np.ndarray, spec: str) -> str:
    lo, hi = np.min(values), np.max(values)
    return format(lo, spec) if lo == hi else f"{format(lo, spec)}–{format(hi, spec)}"


#: study -> {saved result name -> builder}
STUDIES: dict[str, dict[str, Callable[[xr.Dataset, Path], Built]]] = {
    "elhage2022": {
        "superposition_vs_sparsity": superposition_vs_sparsity,
        "phase_diagram": phase_diagram,
        "feature_dimensionality": feature_dimensionality,
    },
}


def build(study: str, data_dir: Path, out_dir: Path) -> dict[str, Built]:
    """Every figure and table of `study` from `data_dir/<name>/results.nc` into `out_dir`,
    and the study's write-up `out_dir/<study>.md` with the numbers measured from them.

    Raises:
        ValueError: an unknown study, or a saved result that is missing.
    """
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; known: {', '.join(STUDIES)}")
    built, meta = {}, {}
    for name, builder in STUDIES[study].items():
        path = Path(data_dir) / name / RESULTS_FILE
        if not path.exists():
            raise ValueError(
                f"{path} not found: run experiments/{study}/{name}.py first (or --quick)"
            )
        ds = read_dataset(path)
        built[name] = builder(ds, Path(out_dir))
        meta[name] = {"wall_time_s": ds.attrs.get("wall_time_s"), "quick": ds.attrs.get("quick")}
    text = WRITE_UPS[study](built, meta)
    path = atomic_write_text(Path(out_dir) / f"{study}.md", text)
    built["write_up"] = Built((path,), {})
    return built


QUICK_NOTE = " **These are quick-mode results (CI), not the paper's settings.**"


def _elhage_write_up(built: dict[str, Built], meta: dict[str, dict]) -> str:
    sup = built["superposition_vs_sparsity"].numbers
    pd = built["phase_diagram"].numbers
    fd = built["feature_dimensionality"].numbers
    quick = any(m.get("quick") for m in meta.values())

    def wall(name: str) -> str:
        t = meta[name].get("wall_time_s")
        return "unknown" if t is None else f"{float(t):.0f} s"

    def represented(act: str) -> str:
        keys = sorted(
            (k for k in sup if k.startswith(act)),
            key=lambda k: float(k.split("_S")[1].split("_")[0]),
        )
        return ", ".join(f"S = {k.split('_S')[1].split('_')[0]}: {sup[k]}" for k in keys)

    relu_sparse = sup.get("relu_S0.997_represented", 0)
    plateau_1 = fd["plateau_1"]
    plateau_half = fd["plateau_half"]
    return f"""# Elhage et al. 2022, "Toy Models of Superposition": reproduction

Generated by `tms-slt figures elhage2022` from the saved results in `paper/data/elhage2022/`
(`make paper` reruns the experiments in `experiments/elhage2022/`, then this). Every number
below is measured from those results.{QUICK_NOTE if quick else ""}

## 1. Superposition as a function of sparsity (n = 5, m = 2, importance 0.9^i)

![](figures/superposition_vs_sparsity.png)

**The paper.** The linear model keeps the two most important features in orthogonal
directions at every sparsity. The ReLU model does the same when the features are dense; as
sparsity grows it represents more features than dimensions: first antipodal pairs, then all
five features in a pentagon.

**Here** (features with ‖W_i‖ > 0.5, median over seeds; table:
[tables/superposition_vs_sparsity.md](tables/superposition_vs_sparsity.md)):
linear: {represented("linear")}; ReLU: {represented("relu")}.
At S = 0.997 the ReLU model represents {relu_sparse} of 5 features
({"the pentagon regime" if relu_sparse == 5 else "not the full pentagon"}). Wall time:
{wall("superposition_vs_sparsity")}.

## 2. Two features in one dimension: the phase diagram

![](figures/elhage_phase_diagram.png)

**The paper.** With importances (1, r) and feature density p: the more important feature
takes the dimension when features are dense; when they are sparse, both share it
antipodally (superposition); the boundary moves to lower density as r departs from 1.

**Here**: the trained diagram (majority label over seeds) agrees with the exact one
(`transitions.two_feature_phase`) in {pd["agreement"]:.0%} of {pd["cells"]} cells; along the
density axis the trained superposition boundary lies a median
{pd["boundary_distance_decades_median"]:.2f} decades from the exact one, bisected to 0.01
decades (table: [tables/elhage_phase_diagram.md](tables/elhage_phase_diagram.md)). Wall
time: {wall("phase_diagram")}.

**What differs.** The disagreements sit next to the boundary and near r = 1, where the
exact losses of the phases are close and a finite run settles in either; the paper's
second diagram (3 features in 2 dimensions) is not reproduced yet.

## 3. Feature dimensionality and its sticky values

![](figures/feature_dimensionality.png)

**The paper.** m/‖W‖²_F falls from 1 as sparsity grows, with plateaus at 1 and 1/2 (antipodal
pairs), and the per-feature dimensionalities D_i cluster at 1, 3/4, 2/3, 1/2, 2/5 and 3/8.

**Here**: {fd["sticky_fraction"]:.0%} of {fd["represented_features"]} represented features have
D_i within 0.02 of a sticky value; m/‖W‖²_F is within 0.05 of 1 at 1/(1 − S) ∈
{[round(v, 3) for v in plateau_1] or "none of the grid"} and of 1/2 at
{[round(v, 3) for v in plateau_half] or "none of the grid"} (table:
[tables/feature_dimensionality.md](tables/feature_dimensionality.md)). Wall time:
{wall("feature_dimensionality")}.

**What differs.** The paper's D_i cluster at the sticky values over a wide range of
sparsity; here they do so only where m/‖W‖²_F is near 1/2, and m/‖W‖²_F keeps falling at
high sparsity instead of levelling off: the runs are far shorter than the paper's (see
config.toml beside the results), and this figure is not yet a faithful reproduction.
"""


WRITE_UPS: dict[str, Callable[[dict[str, Built], dict[str, dict]], str]] = {
    "elhage2022": _elhage_write_up,
}
