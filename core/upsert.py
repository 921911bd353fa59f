"""Keyed upserts for configuration imports: create, update in place, or leave unchanged."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlmodel import Session, SQLModel, col, select

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
    kind = str(model.__tablename__)
    key_column = cast(Any, model).key  # every upserted table has a stable `key` column
    row = session.exec(select(model).where(col(key_column) == key)).first()
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
