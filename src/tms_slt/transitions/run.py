"""`tms-slt detect RUN_DIR`: detect transitions in a saved run, print, write JSON and a figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tms_slt.transitions.dynamical import detect_dynamical
from tms_slt.transitions.records import Transition

TRANSITIONS_FILE = "transitions.json"
FIGURE_FILE = "transitions.png"


def _figure_instance(transitions: list[Transition], num_instances: int) -> int:
    """The instance with the most configuration-changing transitions (ties: lowest index)."""
    counts = np.zeros(max(num_instances, 1), dtype=int)
    for t in transitions:
        if t.instance is not None and t.configuration_changed:
            counts[t.instance] += 1
    return int(np.argmax(counts))


def detect_run(
    run_dir: str | Path,
    *,
    instance: int | None = None,
    write: bool = True,
    out_dir: str | Path | None = None,
    dpi: int = 120,
    **options: Any,
) -> list[Transition]:
    """Detect dynamical transitions in ``RUN_DIR/results.nc`` (the output of `track`).

    Writes ``transitions.json`` (``{"transitions": [Transition.to_dict(), ...]}``) and
    ``transitions.png`` (:func:`tms_slt.plots.plot_transitions` for ``instance``, default the
    one with the most configuration changes) into ``out_dir`` (default the run directory)
    when ``write``; neither may exist there yet. ``options`` go to :func:`detect_dynamical`.

    Raises:
        FileNotFoundError: no results.nc in ``run_dir``.
        FileExistsError: ``out_dir`` already holds transitions.json.
        ValueError: ``instance`` out of range, or an unreadable results.nc.
    """
    from tms_slt.io import RESULTS_FILE, figure_png, json_text, publish, read_dataset

    run_dir = Path(run_dir)
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a tms-slt run directory?")
    ds = read_dataset(path)
    n_inst = ds.sizes.get("instance", 1)
    if instance is not None and not 0 <= instance < n_inst:
        raise ValueError(f"--instance must be in [0, {n_inst}), got {instance}")
    out = run_dir if out_dir is None else Path(out_dir)
    if write and (out / TRANSITIONS_FILE).exists():
        raise FileExistsError(f"{out / TRANSITIONS_FILE} exists; tms-slt never overwrites it")
    transitions = detect_dynamical(ds, **options)
    if write:
        from tms_slt.plots import plot_transitions

        shown = _figure_instance(transitions, n_inst) if instance is None else instance
        fig = plot_transitions(ds, transitions, instance=shown)
        payload = {"source": str(path), "transitions": [t.to_dict() for t in transitions]}
        # both files or (disk full, interrupted) neither
        publish(
            out,
            {TRANSITIONS_FILE: json_text(payload).encode(), FIGURE_FILE: figure_png(fig, dpi=dpi)},
        )
    return transitions
