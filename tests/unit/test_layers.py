"""Dependencies point one way (../shared/DESIGN.md §2): every import of the package, at
module level or inside a function, goes to the same layer of LAYERS or below, but for the
two listed exceptions (both inside a function: `transitions.run.plot` draws with `plots`,
`io` reads the package's `__version__` for a run's metadata)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "tms_slt"

LAYERS = {
    "config": 0,
    "data": 1,
    "models": 1,
    "schedules": 1,
    "native_build": 1,
    "geometry": 1,
    "theory": 1,
    "training": 2,
    "training_native": 2,
    "io": 2,
    "sampling": 3,
    "transitions": 4,
    "plots": 5,
    "sweep": 5,
    "paper": 6,
    "cli": 7,
}
#: (importing file, imported top-level module): the upward imports allowed.
ALLOWED = {("transitions/run.py", "plots"), ("io.py", "__version__")}


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "tms_slt":
            out.extend(f"tms_slt.{alias.name}" for alias in node.names)  # a submodule or the root's
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
    return [m for m in out if m == "tms_slt" or m.startswith("tms_slt.")]


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_has_a_layer():
    names = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    names |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert names == set(LAYERS), f"LAYERS must list {sorted(names ^ set(LAYERS))}"


def test_imports_point_down():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "__init__.py":
            continue
        own = LAYERS[rel.split("/")[0].removesuffix(".py")]
        for module in _imports(path):
            target = _top(module)
            layer = LAYERS.get(target, 99)  # the package root (its __version__) sits on top
            if layer > own and (rel, target) not in ALLOWED:
                upward.append(f"{rel} imports {module}")
    assert not upward, "imports against the layers: " + "; ".join(upward)
