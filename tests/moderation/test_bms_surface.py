"""moderation talks to bms through its public service API (`bms.booking`), and bms's tables and
states: no private name, no other bms module. Read from the source with `ast`, like test_layers."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import bms.booking

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {"bms.booking", "bms.models", "bms.states"}


def _bms_imports() -> list[tuple[str, int, str, list[str]]]:
    out = []
    for path in sorted((ROOT / "moderation").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bms":
                out.append((path.name, node.lineno, node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                out += [(path.name, node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "bms"]
    return out


def test_moderation_imports_only_the_public_surface_of_bms():
    found = _bms_imports()
    assert any(module == "bms.booking" for _, _, module, _ in found)
    wrong = [f"{f}:{line} {module}" for f, line, module, _ in found if module not in ALLOWED]
    private = [f"{f}:{line} {n}" for f, line, _, names in found for n in names if n.startswith("_")]
    assert wrong == [] and private == []
    for _, _, module, names in found:
        if module == "bms.booking":
            assert set(names) <= set(bms.booking.__all__), names


def test_the_public_surface_is_documented():
    for name in bms.booking.__all__:
        obj = getattr(bms.booking, name)
        assert not name.startswith("_")
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert (obj.__doc__ or "").strip(), f"bms.booking.{name} has no docstring"
