"""Append-only audit trail, each row chained to the previous one by a SHA-256 hash.

Rows are written in the transaction of the change they record. The database refuses
UPDATE and DELETE on the table (triggers created by the migration); the chain catches
what someone with the power to drop those triggers changes anyway.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, text
from sqlmodel import Field, Session, SQLModel, col, select

from core.db import UTCDateTime, is_sqlite, utcnow

GENESIS = "0" * 64
# Any constant will do: it names the one advisory lock that orders chain appends on PostgreSQL.
_PG_LOCK_KEY = 0x626F6F6B67617465 & 0x7FFFFFFFFFFFFFFF


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    actor_id: int | None = Field(default=None, index=True)
    actor: str = Field(max_length=254, description="email, api key or 'system'")
    action: str = Field(max_length=80, index=True)
    object_type: str = Field(max_length=40)
    object_id: str = Field(max_length=80)
    client_addr: str | None = Field(default=None, max_length=64)
    summary: str = Field(default="{}", sa_type=Text, description="canonical JSON: before/after and details")
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


@dataclass(frozen=True)
class Actor:
    """Who did it, from where: carried from the request into service calls."""

    id: int | None
    label: str
    client_addr: str | None = None


SYSTEM = Actor(id=None, label="system")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def _digest(prev_hash: str, e: AuditEntry) -> str:
    material = "\x1f".join(
        [
            prev_hash,
            e.at.isoformat(),
            "" if e.actor_id is None else str(e.actor_id),
            e.actor,
            e.action,
            e.object_type,
            e.object_id,
            e.client_addr or "",
            e.summary,
        ]
    )
    return hashlib.sha256(material.encode()).hexdigest()


def record(
    session: Session,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: Any,
    *,
    before: Any = None,
    after: Any = None,
    **details: Any,
) -> AuditEntry:
    """Append one row. Call it last in the transaction: on PostgreSQL it holds the chain lock."""
    if not is_sqlite(session):
        # Serialise appends so two transactions never chain onto the same predecessor.
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
    prev = session.exec(select(AuditEntry.hash).order_by(col(AuditEntry.id).desc()).limit(1)).first()
    summary: dict[str, Any] = dict(details)
    if before is not None:
        summary["before"] = before
    if after is not None:
        summary["after"] = after
    entry = AuditEntry(
        at=utcnow(),
        actor_id=actor.id,
        actor=actor.label,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        client_addr=actor.client_addr,
        summary=_canonical(summary),
        prev_hash=prev or GENESIS,
        hash="",
    )
    entry.hash = _digest(entry.prev_hash, entry)
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str = ""


def verify(session: Session, batch: int = 5000) -> VerifyResult:
    """Walk the chain in id order; name the first row whose link or content does not match."""
    prev = GENESIS
    checked = 0
    last_id = 0
    while True:
        rows = session.exec(
            select(AuditEntry).where(col(AuditEntry.id) > last_id).order_by(col(AuditEntry.id)).limit(batch)
        ).all()
        if not rows:
            return VerifyResult(ok=True, checked=checked)
        for row in rows:
            if row.prev_hash != prev:
                return VerifyResult(False, checked, row.id, "link to the previous row is broken")
            if _digest(prev, row) != row.hash:
                return VerifyResult(False, checked, row.id, "row content does not match its hash")
            prev = row.hash
            checked += 1
            last_id = row.id or last_id
