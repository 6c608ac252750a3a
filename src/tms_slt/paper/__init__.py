"""`paper/`: figures and tables built from saved results alone (no training, no sampling).

Each study's experiment scripts (experiments/<study>/*.py) save results.nc + meta.json into
`paper/data/<study>/<name>/`; `build(study, data_dir, out_dir)` turns each saved result into
`figures/<name>.png` and `tables/<name>.md` under `out_dir` (default `paper/`), and returns
the numbers the study's write-up quotes. Deterministic: the same results give the same files
(PNG metadata carries no date). `tms-slt figures` is the command.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import xarray as xr

from tms_slt.io import RESULTS_FILE, atomic_write_text, read_dataset
from tms_slt.paper import chen, chen_bayes, chen_sgd, elhage, moving, swish
from tms_slt.paper.common import Built


def experiment_config(path: Path, out: Path, overrides: dict[str, Any]) -> Any:
    """An experiment's TOML config with `overrides` (its quick mode), after refusing an `out`
    that already holds results: before any training, not after."""
    from tms_slt.config import load_config, with_overrides
    from tms_slt.io import refuse_existing_run

    refuse_existing_run(out)
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


#: study -> {saved result name -> builder}
STUDIES: dict[str, dict[str, Callable[[xr.Dataset, Path], Built]]] = {
    "elhage2022": {
        "superposition_vs_sparsity": elhage.superposition_vs_sparsity,
        "phase_diagram": elhage.phase_diagram,
        "phase_diagram_3in2": elhage.phase_diagram_3in2,
        "feature_dimensionality": elhage.feature_dimensionality,
    },
    "chen2023": {
        "kgon_table": chen.kgon_table,
        "bayesian_transitions": chen_bayes.bayesian_transitions,
        "free_energy_ti": chen_bayes.free_energy_ti,
        "sgd_plateaus": chen_sgd.sgd_plateaus,
    },
    "swish": {"swish_vs_relu": swish.swish_vs_relu},
    "moving-distribution": {"tracking": moving.tracking},
}


def build(study: str, data_dir: Path, out_dir: Path) -> dict[str, Built]:
    """Every figure and table of `study` from `data_dir/<name>/results.nc` into `out_dir`,
    and the study's write-up `out_dir/<study>.md` with the numbers measured from them.

    Raises:
        ValueError: an unknown study, or a saved result that is missing.
    """
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; known: {', '.join(STUDIES)}")
    built, meta, datasets = {}, {}, {}
    for name, builder in STUDIES[study].items():
        path = Path(data_dir) / name / RESULTS_FILE
        if not path.exists():
            raise ValueError(
                f"{path} not found: run experiments/{study}/{name}.py first (or --quick)"
            )
        ds = read_dataset(path)
        datasets[name] = ds
        built[name] = builder(ds, Path(out_dir))
        meta[name] = {"wall_time_s": ds.attrs.get("wall_time_s"), "quick": ds.attrs.get("quick")}
    if study in COMBINED:
        built["combined"] = COMBINED[study](datasets, Path(out_dir))
    text = WRITE_UPS[study](built, meta)
    path = atomic_write_text(Path(out_dir) / f"{study}.md", text)
    built["write_up"] = Built((path,), {})
    return built


#: study -> builder of the figures that need more than one saved result (name -> dataset).
COMBINED: dict[str, Callable[[dict[str, xr.Dataset], Path], Built]] = {
    "chen2023": chen_bayes.bayesian_comparison,
}


WRITE_UPS: dict[str, Callable[[dict[str, Built], dict[str, dict]], str]] = {
    "elhage2022": elhage.write_up,
    "chen2023": chen.write_up,
    "swish": swish.write_up,
    "moving-distribution": moving.write_up,
}
