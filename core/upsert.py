"""Keyed upserts for configuration imports: create, update in place, or leave unchanged."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlmodel import Session, SQLModel, select

T = TypeVar("T", bound=SQLModel)


@dataclass
class ImportReport:
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)
    changes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": dict(self.created),
            "updated": dict(self.updated),
            "unchanged": dict(self.unchanged),
            "changes": self.changes,
        }


def upsert(session: Session, model: type[T], key: str, values: dict[str, Any], report: ImportReport) -> T:
    """Find the row by its `key`; write only the fields that differ; count what happened."""
    kind = model.__tablename__  # type: ignore[attr-defined]
    row = session.exec(select(model).where(model.key == key)).first()  # type: ignore[attr-defined]
    if row is None:
        row = model(key=key, **values)
        session.add(row)
        session.flush()
        report.created[kind] += 1
        report.changes.append(f"created {kind} {key}")
        return row
    diff = [k for k, v in values.items() if getattr(row, k) != v]
    if diff:
        for k in diff:
            setattr(row, k, values[k])
        session.add(row)
        session.flush()
        report.updated[kind] += 1
        report.changes.append(f"updated {kind} {key}: {', '.join(sorted(diff))}")
    else:
        report.unchanged[kind] += 1
    return row
