"""What every study's end-to-end test shares: running `tms-slt figures STUDY --quick`, and
a digest of the figures and tables it wrote (to compare rebuilds byte for byte)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tms_slt.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def quick_figures(tmp_path_factory) -> Callable[..., Path]:
    """quick_figures(STUDY, ...): the directory `tms-slt figures STUDY... --quick` wrote
    (data/, figures/, tables/)."""

    def run(*studies: str) -> Path:
        out = tmp_path_factory.mktemp("figures") / "quick"
        argv = ["figures", *studies, "--quick", "--out", str(out)]
        assert main([*argv, "--experiments", str(REPO / "experiments")]) == 0
        return out

    return run


@pytest.fixture(scope="session")
def digest() -> Callable[[Path], dict[str, str]]:
    """digest(root): sha256 of every file under root/figures and root/tables, by path."""

    def sha(root: Path) -> dict[str, str]:
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "figures").glob("*")) + sorted((root / "tables").glob("*"))
        }

    return sha
