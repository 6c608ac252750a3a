"""README's Python snippets run as written (in order, sharing one namespace)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_snippets():
    assert len(_snippets()) >= 2


@pytest.mark.slow
def test_readme_snippets_run():
    namespace: dict = {}
    for code in _snippets():
        exec(compile(code, str(README), "exec"), namespace)
    llc = namespace["llc"]
    assert llc.mean.shape == (1, 6)
    assert namespace["x"].shape == (1000, 6)
    assert "llc_mean" in namespace["llc"].dataset
