"""Append-only audit trail, each row chained to the previous one by a keyed hash (HMAC-SHA256).

Rows are written in the transaction of the change they record. The database refuses
UPDATE and DELETE on the table (triggers created by the migration); the chain catches
what someone with the power to drop those triggers changes anyway.

The chain key is derived from the app's secret key (`Settings.effective_secret_key()`, HMAC
with the label below) and never stored in the database, so whoever can write the table cannot
recompute the hashes after editing a row. Cutting the tail off leaves a shorter chain that
still links; that is what the signed checkpoint catches: a small file outside the database
(`var/audit-checkpoint`: row count, last id, last hash, HMAC signature with a second derived
key) that `bookgate audit verify` checks against and moves forward after each intact walk. Run
it periodically (cron, a systemd timer): rows cut after the last checkpoint are caught, rows
appended and cut between two runs are not.

Rows written before migration 0009 were chained with a bare SHA-256; the migration verifies
them by that rule and re-keys the whole chain (it refuses to re-key a chain that is already
broken, so a forgery cannot be laundered). Changing the secret key breaks the chain: keep it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Text, text
from sqlmodel import Field, Session, SQLModel, col, select

from config import get_settings
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


_CHAIN_LABEL = b"bookgate audit chain v1"
_CHECKPOINT_LABEL = b"bookgate audit checkpoint v1"
CHECKPOINT_FILE = "audit-checkpoint"


@lru_cache(maxsize=8)
def _derive(secret: str, label: bytes) -> bytes:
    return hmac.new(secret.encode(), label, hashlib.sha256).digest()


def chain_key(secret: str | None = None) -> bytes:
    """The key rows are chained with: from `secret`, else from the settings' secret key."""
    return _derive(get_settings().effective_secret_key() if secret is None else secret, _CHAIN_LABEL)


def checkpoint_key(secret: str | None = None) -> bytes:
    return _derive(get_settings().effective_secret_key() if secret is None else secret, _CHECKPOINT_LABEL)


def _material(prev_hash: str, e: AuditEntry) -> bytes:
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
    return material.encode()


def legacy_digest(prev_hash: str, e: AuditEntry) -> str:
    """The rule of rows written before migration 0009 (bare SHA-256): for that migration only."""
    return hashlib.sha256(_material(prev_hash, e)).hexdigest()


def keyed_digest(prev_hash: str, e: AuditEntry, key: bytes) -> str:
    """The rule of every row since migration 0009: HMAC-SHA256 under the chain key."""
    return hmac.new(key, _material(prev_hash, e), hashlib.sha256).hexdigest()


_digest = keyed_digest


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
    entry.hash = _digest(entry.prev_hash, entry, chain_key())
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class Checkpoint:
    """The head of the chain as last seen intact: how many rows, and the last one's id and hash."""

    rows: int
    last_id: int
    last_hash: str

    def _payload(self) -> bytes:
        return f"{self.rows}\x1f{self.last_id}\x1f{self.last_hash}".encode()

    def signature(self, key: bytes) -> str:
        return hmac.new(key, self._payload(), hashlib.sha256).hexdigest()


class CheckpointError(Exception):
    """The checkpoint file is unreadable or its signature does not match: it was tampered with."""


def read_checkpoint(path: Path, key: bytes | None = None) -> Checkpoint | None:
    """The signed checkpoint at `path`, None if there is none yet."""
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
        cp = Checkpoint(int(data["rows"]), int(data["last_id"]), str(data["last_hash"]))
        sig = str(data["sig"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"audit checkpoint {path} is unreadable") from exc
    if not hmac.compare_digest(sig, cp.signature(key or checkpoint_key())):
        raise CheckpointError(f"audit checkpoint {path} does not match its signature")
    return cp


def write_checkpoint(path: Path, cp: Checkpoint, key: bytes | None = None) -> None:
    """Replace the checkpoint atomically (write aside, fsync, rename), readable by its owner only."""
    sig = cp.signature(key or checkpoint_key())
    body = json.dumps({"rows": cp.rows, "last_id": cp.last_id, "last_hash": cp.last_hash, "sig": sig})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(body + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


Problem = Literal["", "rewritten", "truncated"]


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str = ""
    problem: Problem = ""
    head: Checkpoint | None = None  # the intact chain's head: what the next checkpoint records


def verify(
    session: Session, batch: int = 5000, *, key: bytes | None = None, checkpoint: Checkpoint | None = None
) -> VerifyResult:
    """Walk the chain in id order; name the first row whose link or content does not match
    (`rewritten`), or, given the last checkpoint, a chain shorter than it (`truncated`)."""
    key = key or chain_key()
    prev = GENESIS
    checked = 0
    last_id = 0
    seen_checkpoint_row = False
    while True:
        rows = session.exec(
            select(AuditEntry).where(col(AuditEntry.id) > last_id).order_by(col(AuditEntry.id)).limit(batch)
        ).all()
        if not rows:
            break
        for row in rows:
            if row.prev_hash != prev:
                return VerifyResult(False, checked, row.id, "link to the previous row is broken", "rewritten")
            if not hmac.compare_digest(_digest(prev, row, key), row.hash):
                return VerifyResult(False, checked, row.id, "row content does not match its hash", "rewritten")
            if checkpoint is not None and row.id == checkpoint.last_id:
                if row.hash != checkpoint.last_hash:
                    return VerifyResult(
                        False, checked, row.id, "row differs from the one the checkpoint recorded", "rewritten"
                    )
                seen_checkpoint_row = True
            prev = row.hash
            checked += 1
            last_id = row.id or last_id
    if checkpoint is not None and (checked < checkpoint.rows or not (seen_checkpoint_row or checkpoint.rows == 0)):
        return VerifyResult(
            False,
            checked,
            None,
            f"the checkpoint recorded {checkpoint.rows} rows up to row {checkpoint.last_id}; "
            f"{checked} rows remain and the last is row {last_id or 'none'}",
            "truncated",
        )
    return VerifyResult(ok=True, checked=checked, head=Checkpoint(checked, last_id, prev))
