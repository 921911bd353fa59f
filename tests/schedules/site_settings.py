"""Re-importing the booking tests' site file with changes: how a site's settings get stored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bookgate.provision import import_site_file
from core.audit import SYSTEM

BASE = Path(__file__).parents[1] / "bms" / "site.yaml"


def reimport(engine: Any, tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = yaml.safe_load(BASE.read_text(encoding="utf-8"))
    change(doc)
    path = tmp_path / "site-changed.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    import_site_file(engine, path, SYSTEM)


def resource(doc: dict[str, Any], key: str) -> dict[str, Any]:
    for site in doc["sites"]:
        for venue in site.get("venues", []):
            for res in venue.get("resources", []):
                if res["key"] == key:
                    return res  # type: ignore[no-any-return]
    raise KeyError(key)
