"""The import rules that keep the layers apart, read from the source (every import, function-level too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package of sota -> the packages of sota it must not import. Lower layers know nothing of higher ones:
# errors/paths/utils < data, metrics, formats < models < compress < measure < config, lit_module, tasks, tools.
TOOLS = ("tasks", "tools", "sweep", "lit_module", "checkpoint", "results", "export")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "errors": ("*",),
    "paths": ("*",),
    "schema": ("*",),
    "compose": ("utils", "data", "metrics", "formats", "models", "compress", "measure", "config", *TOOLS),
    "utils": ("data", "metrics", "formats", "models", "compress", "measure", "config", *TOOLS),
    "data": ("metrics", "models", "compress", "measure", "config", *TOOLS),
    "metrics": ("data", "models", "compress", "measure", "config", *TOOLS),
    "formats": ("data", "metrics", "models", "compress", "measure", "config", *TOOLS),
    "models": ("data", "metrics", "compress", "measure", "config", *TOOLS),
    "compress": ("data", "metrics", "measure", "config", *TOOLS),
    "measure": ("data", "config", *TOOLS),
    "config": TOOLS,
    "sweep": ("tasks", "lit_module", "tools", "checkpoint", "results"),
}


def _sota_imports(path: Path) -> set[str]:
    """The sota packages a file imports (`sota.models.encoder` -> `models`), anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                 else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "sota" and len(parts) > 1:
                found.add(parts[1])
    return found


def _package(path: Path) -> str:
    rel = path.relative_to(ROOT / "sota")
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_wrong_way_imports(package):
    bad = []
    for path in sorted((ROOT / "sota").rglob("*.py")):
        if _package(path) != package:
            continue
        for imported in _sota_imports(path) - {package}:
            if "*" in FORBIDDEN[package] or imported in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)} imports sota.{imported}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_the_check_sees_a_wrong_way_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from sota.models.encoder import AudioEncoder\nimport sota.tasks\n")
    assert _sota_imports(bad) == {"models", "tasks"}
