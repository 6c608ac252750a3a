"""What every study's figure builders share: the `Built` record and table formatting."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Appended to a write-up's opening paragraph when any of its results came from quick mode.
QUICK_NOTE = " **These are quick-mode results (CI), not the paper's settings.**"


@dataclass(frozen=True)
class Built:
    """What one figure builder wrote and the numbers it measured."""

    files: tuple[Path, ...]
    numbers: dict[str, Any]


def wall_time(meta: dict[str, dict], name: str) -> str:
    """A saved result's wall time as the write-ups quote it ("unknown" if not recorded)."""
    t = meta[name].get("wall_time_s")
    return "unknown" if t is None else f"{float(t):.0f} s"


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def span(values: np.ndarray, spec: str) -> str:
    """ "lo–hi" of `values` formatted with `spec` ("v" when all are equal)."""
    lo, hi = np.min(values), np.max(values)
    return format(lo, spec) if lo == hi else f"{format(lo, spec)}–{format(hi, spec)}"
