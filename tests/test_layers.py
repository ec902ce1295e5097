"""Imports point down: every module of eightbit imports only from the layers below its own (DESIGN.md)."""

from __future__ import annotations

import ast
from importlib import resources
from pathlib import Path

# Each package (or top-level module) of eightbit, by its layer: the bottom first. A module may import from its
# own package and from lower layers, at module level or inside a function alike.
LAYERS = [
    {"errors", "config", "isa", "metadata"},
    {"ir", "quant", "sources", "frontends"},
    {"kernels", "plan", "datasets"},
    {"passes", "backends"},
    {"prepare", "measure", "codegen"},
    {"calibrate", "fallback", "never_slower", "target_rules"},
    {"pipeline"},
    {"record", "qat", "recipe"},
    {"api"},
    {"report"},
    {"demo"},
    {"qat.demo"},
    {"cli"},
]
LAYER = {unit: level for level, units in enumerate(LAYERS) for unit in units}
ROOT = Path(str(resources.files("eightbit")))


def _unit(module: str) -> str | None:
    """The layer unit of a module of eightbit ("eightbit.passes.fuse_activation" -> "passes"); None for the package
    root, the public facade that re-exports the API."""
    parts = module.split(".")
    if parts[0] != "eightbit" or len(parts) == 1:
        return None
    return "qat.demo" if parts[1:3] == ["qat", "demo"] else parts[1]


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module imported, line) for every import of an eightbit module in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            if node.module == "eightbit":  # from eightbit import api
                found += [(f"eightbit.{alias.name}", node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    return found


def test_every_import_points_down():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        unit = _unit(module)
        if unit is None:
            continue
        assert unit in LAYER, f"{module}: its package has no layer in LAYERS"
        for imported, line in _imports(path):
            target = _unit(imported)
            if target is None or target == unit or imported == "eightbit.__version__":
                continue
            assert target in LAYER, f"{imported}: no layer in LAYERS"
            if LAYER[target] >= LAYER[unit]:
                upward.append(f"{path.relative_to(ROOT.parent)}:{line}: {unit} imports {imported}")
    assert not upward, "imports that point up or sideways:\n" + "\n".join(upward)
