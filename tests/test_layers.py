"""Imports run one way through the house (docs/architecture.md). The rule is written once, here,
and checked against every import statement of the shipped packages, read with `ast` (imports
inside functions included), so a shortcut back up the stairs fails the suite where it is made."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DOMAINS = {"access", "bms", "vms", "moderation"}
# package -> the packages of ours it may import (besides itself)
MAY_IMPORT: dict[str, set[str]] = {
    "config": set(),
    "core": {"config"},
    "access": {"config", "core"},
    "bms": {"config", "core", "access"},
    "vms": {"config", "core", "access"},
    "moderation": {"config", "core", "access", "bms", "vms"},
    "drivers": {"access.protocol"},
    "notify": {"config", "core", *DOMAINS},
    "portal": {"config", "core", *DOMAINS, "notify"},
    "schedules": {"config", "core", *DOMAINS, "notify"},
    "migrations": {"config", "core", *DOMAINS, "notify"},
    "bookgate": {"config", "core", *DOMAINS, "notify", "drivers", "portal", "schedules", "migrations"},
}
# modules held to a stricter rule than their package
STRICTER: dict[str, set[str]] = {
    "access.protocol": set(),  # the drivers' contract: the standard library alone
}
OURS = set(MAY_IMPORT)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            # `from access import protocol` names the module access.protocol
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _allowed(importer: str, target: str) -> bool:
    top = target.split(".")[0]
    if top not in OURS or top == importer.split(".")[0]:
        return True
    for module, rule in STRICTER.items():
        if importer == module or importer.startswith(module + "."):
            return any(target == r or target.startswith(r + ".") for r in rule)
    rule = MAY_IMPORT[importer.split(".")[0]]
    return top in rule or any(target == r or target.startswith(r + ".") for r in rule)


def _violations() -> list[str]:
    out = []
    for package in sorted(OURS):
        for path in sorted((ROOT / package).rglob("*.py")):
            importer = _module_name(path)
            for line, target in _imports(path):
                # `from access import protocol` also yields "access" itself: judge the fullest name
                if not _allowed(importer, target) and not any(
                    other.startswith(target + ".") and _allowed(importer, other)
                    for ln, other in _imports(path)
                    if ln == line
                ):
                    out.append(f"{path.relative_to(ROOT)}:{line}: {importer} imports {target}")
    return out


def test_imports_run_one_way():
    assert _violations() == []


def test_the_rule_catches_a_shortcut():
    """The checker itself: a domain importing the composition root, a driver reaching past the
    protocol, the protocol importing the kernel, are all reported."""
    assert not _allowed("bms.service", "bookgate.app")
    assert not _allowed("drivers.esprfid.driver", "access.models")
    assert _allowed("drivers.esprfid.driver", "access.protocol")
    assert not _allowed("access.protocol", "core.db")
    assert not _allowed("core.auth", "access.models")
    assert not _allowed("access.service", "bms.models")
    assert _allowed("moderation.service", "bms.service")
    assert not _allowed("portal.manager", "schedules.clock")
