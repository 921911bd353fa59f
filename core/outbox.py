"""Transactional outbox: messages written with the change that causes them, sent after commit.

Workers on any number of processes claim batches with a lease (`FOR UPDATE SKIP LOCKED` on
PostgreSQL; SQLite's single writer serialises claims), handle them, then mark them done or
schedule a retry with backoff. A crashed worker's lease runs out and the message is claimed again.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Index, Text, bindparam, insert, or_
from sqlalchemy import select as sa_select
from sqlmodel import Field, Session, SQLModel, col, select, update

from core.db import JSONText, UTCDateTime, ident, utcnow, write_session

log = logging.getLogger("core.outbox")


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "done_at", "available_at"), Index("ix_outbox_parked", "failed_at"))

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    kind: str = Field(max_length=80)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSONText)
    available_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    attempts: int = 0
    locked_by: str | None = Field(default=None, max_length=64)
    locked_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    done_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    failed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, sa_type=Text)


WRITTEN = "outbox.written"
_TABLE = OutboxMessage.__table__  # type: ignore[attr-defined]
_ENQUEUE = insert(_TABLE).returning(_TABLE.c.id)


def enqueue(
    session: Session, kind: str, payload: dict[str, Any], *, available_at: datetime | None = None
) -> OutboxMessage:
    """Add a message to the caller's transaction (one INSERT, now): it exists only if that
    transaction commits."""
    now = utcnow()
    msg = OutboxMessage(kind=kind, payload=payload, created_at=now, available_at=available_at or now)
    msg.id = session.execute(
        _ENQUEUE,
        {"kind": kind, "payload": payload, "created_at": now, "available_at": msg.available_at, "attempts": 0},
    ).scalar_one()
    # Noted on the connection, like access.transitions' NEXT_DUE: a delivery worker on this engine
    # wakes at once when the connection comes back after the commit (see schedules.delivery); a
    # rollback clears it.
    session.connection().info[WRITTEN] = True
    return msg


@dataclass(frozen=True)
class Claimed:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int


_NOW = bindparam("now", type_=UTCDateTime())


def _available(kinds: tuple[str, ...]) -> tuple[Any, ...]:
    return (
        col(OutboxMessage.kind).in_(kinds),
        col(OutboxMessage.done_at).is_(None),
        col(OutboxMessage.failed_at).is_(None),
        col(OutboxMessage.available_at) <= _NOW,
        or_(col(OutboxMessage.locked_until).is_(None), col(OutboxMessage.locked_until) < _NOW),
    )


# The workers' reads are built once per list of kinds, with the time as a parameter: a delivery
# worker looks after every commit that wrote a message, and building and keying the statement
# again cost four times what running it does (SQLite: about 600 us against 150 us a look).
@functools.lru_cache(maxsize=64)
def _look(kinds: tuple[str, ...]) -> Any:
    return sa_select(_TABLE.c.id).where(*_available(kinds)).limit(1)


@functools.lru_cache(maxsize=64)
def _batch(kinds: tuple[str, ...], limit: int) -> Any:
    return (
        select(OutboxMessage)
        .where(*_available(kinds))
        .order_by(col(OutboxMessage.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def any_available(session: Session, kinds: list[str]) -> bool:
    """Whether `claim` or `take` would find anything: a read, so an idle worker's look costs no
    write transaction (on SQLite, no turn at the single writer)."""
    found = session.connection().execute(_look(tuple(kinds)), {"now": utcnow()}).first()
    return found is not None  # Core: no ORM round for one id


def claim(
    engine: Engine,
    worker: str,
    kinds: list[str],
    *,
    limit: int = 50,
    lease: timedelta = timedelta(minutes=2),
) -> list[Claimed]:
    """Lease up to `limit` available messages of the given kinds to this worker."""
    now = utcnow()
    with write_session(engine) as s:
        rows = s.exec(_batch(tuple(kinds), limit), params={"now": now}).all()
        claimed = []
        for row in rows:
            row.locked_by = worker
            row.locked_until = now + lease
            row.attempts += 1
            claimed.append(Claimed(ident(row), row.kind, dict(row.payload), row.attempts))
        return claimed


def take(session: Session, kinds: list[str], *, limit: int = 50) -> list[OutboxMessage]:
    """Lock available messages inside the caller's transaction, for work that is done and settled
    (`settle_taken`) in that same transaction: no lease is needed, since nothing is visible to
    others before the commit and a rollback leaves the rows as they were."""
    return list(session.exec(_batch(tuple(kinds), limit), params={"now": utcnow()}).all())


def settle_taken(session: Session, rows: list[OutboxMessage]) -> None:
    now = utcnow()
    for row in rows:
        row.attempts += 1
        row.done_at = now
        row.locked_by, row.locked_until = None, None
        session.add(row)


def mark_done(engine: Engine, ids: list[int], worker: str) -> None:
    if not ids:
        return
    with write_session(engine) as s:
        s.exec(
            update(OutboxMessage)
            .where(col(OutboxMessage.id).in_(ids), col(OutboxMessage.locked_by) == worker)
            .values(done_at=utcnow(), locked_until=None)
        )


def mark_failed(engine: Engine, msg: Claimed, worker: str, error: str, *, max_attempts: int = 8) -> None:
    """Retry later with exponential backoff; give up (failed_at) after max_attempts."""
    now = utcnow()
    values: dict[str, Any] = {"last_error": error[:2000], "locked_until": None}
    if msg.attempts >= max_attempts:
        values["failed_at"] = now
    else:
        values["available_at"] = now + timedelta(seconds=min(3600, 5 * 2 ** (msg.attempts - 1)))
    with write_session(engine) as s:
        s.exec(
            update(OutboxMessage)
            .where(col(OutboxMessage.id) == msg.id, col(OutboxMessage.locked_by) == worker)
            .values(**values)
        )


Handler = Callable[[Claimed], None]


def new_worker_id() -> str:
    return "w-" + secrets.token_hex(6)


def drain(engine: Engine, handlers: Mapping[str, Handler], *, worker: str | None = None, limit: int = 50) -> int:
    """Handle every message available now; return how many were handled successfully."""
    worker = worker or new_worker_id()
    handled = 0
    while True:
        batch = claim(engine, worker, list(handlers), limit=limit)
        if not batch:
            return handled
        done: list[int] = []
        for msg in batch:
            try:
                handlers[msg.kind](msg)
            except Exception as exc:
                log.warning("outbox message %s (%s) failed: %s", msg.id, msg.kind, exc)
                mark_failed(engine, msg, worker, f"{type(exc).__name__}: {exc}")
            else:
                done.append(msg.id)
                handled += 1
        mark_done(engine, done, worker)


def settle(session: Session, ids: list[int], worker: str) -> int:
    """Mark claimed messages done inside the caller's transaction (with what their handling wrote)."""
    if not ids:
        return 0
    result = session.exec(
        update(OutboxMessage)
        .where(col(OutboxMessage.id).in_(ids), col(OutboxMessage.locked_by) == worker)
        .values(done_at=utcnow(), locked_until=None)
    )
    return int(result.rowcount or 0)


def parked(session: Session, kinds: list[str] | None = None, *, limit: int = 100) -> list[OutboxMessage]:
    """Messages that failed too often and wait for a person (newest first)."""
    stmt = select(OutboxMessage).where(col(OutboxMessage.failed_at).is_not(None), col(OutboxMessage.done_at).is_(None))
    if kinds:
        stmt = stmt.where(col(OutboxMessage.kind).in_(kinds))
    return list(session.exec(stmt.order_by(col(OutboxMessage.id).desc()).limit(limit)).all())


def resend(session: Session, message_id: int) -> OutboxMessage | None:
    """Put a parked message back in the queue with a fresh count of attempts; None if not parked."""
    msg = session.get(OutboxMessage, message_id, with_for_update=True)
    if msg is None or msg.failed_at is None or msg.done_at is not None:
        return None
    msg.failed_at = None
    msg.attempts = 0
    msg.available_at = utcnow()
    msg.locked_by = None
    msg.locked_until = None
    session.add(msg)
    session.flush()
    session.connection().info[WRITTEN] = True
    return msg
