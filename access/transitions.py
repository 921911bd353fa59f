"""Transitions: when each door must change, written with the access windows that cause them.

For a badge window the grant is due `PRELOAD` ahead of the window (controllers that keep
validity windows enforce it themselves, so a network cut at the start locks nobody out) and
the revoke at its end; for a `free` window the door opens at the start and closes at the end.
Rewriting a source replaces its pending rows; rows already done stay as history. A row a
dispatcher has claimed is in flight: its command may be on the wire, so it is neither deleted nor
forgotten. It settles by itself, and a revoke is planned behind it exactly as for a done grant
(the dispatcher does not claim the revoke while the grant for the same door and card is in flight).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, or_
from sqlmodel import Session, col, delete, select

from access.desired import PRELOADED
from access.models import AccessWindow, Credential, Door, DoorResource, Transition
from core.db import ident, utcnow

PRELOAD = timedelta(hours=24)
NEXT_DUE = "bookgate.next_due"  # connection.info key: the earliest due time this transaction wrote


def _note_due(session: Session, due: datetime) -> None:
    """Remember, on the transaction's connection, the earliest due time written: a clock that
    listens to its engine's commits wakes for it (schedules.clock), and a rollback forgets it."""
    info = session.connection().info
    current = info.get(NEXT_DUE)
    if current is None or due < current:
        info[NEXT_DUE] = due


def plan_source(session: Session, source_type: str, source_id: int, now: datetime | None = None) -> int:
    """Replace the pending transitions of one source by those its current windows need."""
    now = now or utcnow()
    source = f"{source_type}:{source_id}"
    session.exec(
        delete(Transition).where(
            col(Transition.source) == source, col(Transition.status) == "pending", not_in_flight(now)
        )
    )
    windows = session.exec(
        select(AccessWindow).where(
            col(AccessWindow.source_type) == source_type, col(AccessWindow.source_id) == source_id
        )
    ).all()
    if not windows:
        # Whatever was granted for this source must go: one revoke per credential, due now.
        return _revoke_done(session, source, now)
    resource_ids = {w.resource_id for w in windows}
    doors = session.exec(
        select(Door)
        .join(DoorResource, col(DoorResource.door_id) == Door.id)
        .where(col(DoorResource.resource_id).in_(resource_ids), Door.active)
    ).all()
    links = session.exec(select(DoorResource).where(col(DoorResource.resource_id).in_(resource_ids))).all()
    doors_by_id = {d.id: d for d in doors}
    creds = session.exec(
        select(Credential).where(
            col(Credential.user_id).in_({w.user_id for w in windows}), col(Credential.revoked_at).is_(None)
        )
    ).all()
    rows: list[tuple[Door, int | None, str, datetime]] = []
    for w in windows:
        for link in links:
            door = doors_by_id.get(link.door_id)
            if door is None or link.resource_id != w.resource_id:
                continue
            if w.mode == "free":
                rows += [(door, None, "open", w.start), (door, None, "close", w.end)]
                continue
            if w.mode not in PRELOADED:
                continue  # decided online at each presentation: nothing to store on the controller
            for c in creds:
                if c.user_id == w.user_id:
                    rows += [(door, c.id, "grant", max(now, w.start - PRELOAD)), (door, c.id, "revoke", w.end)]
    for door, cred_id, action, due in rows:
        _note_due(session, due)
        session.add(
            Transition(
                controller_id=door.controller_id,
                door_id=ident(door),
                credential_id=cred_id,
                action=action,
                due_at=due,
                source=source,
            )
        )
    # A changed window may have left an earlier grant behind: settle it now, the state decides.
    _revoke_done(session, source, now)
    session.flush()
    return len(rows)


def in_flight(now: datetime):
    """A pending row some dispatcher has claimed and whose lease runs: its command may be sent."""
    return and_(
        col(Transition.status) == "pending",
        col(Transition.claimed_until).is_not(None),
        col(Transition.claimed_until) >= now,
    )


def not_in_flight(now: datetime):
    return or_(col(Transition.claimed_until).is_(None), col(Transition.claimed_until) < now)


def _revoke_done(session: Session, source: str, now: datetime) -> int:
    """One revoke (or close), due now, for every door and card this source may have granted:
    grants done, and grants in flight whose acknowledgement has not come back yet."""
    done = session.exec(
        select(Transition).where(
            col(Transition.source) == source,
            or_(col(Transition.status) == "done", in_flight(now)),
            col(Transition.action).in_(["grant", "open"]),
        )
    ).all()
    seen = set()
    for t in done:
        key = (t.door_id, t.credential_id)
        if key in seen:
            continue
        seen.add(key)
        _note_due(session, now)
        session.add(
            Transition(
                controller_id=t.controller_id,
                door_id=t.door_id,
                credential_id=t.credential_id,
                action="revoke" if t.credential_id else "close",
                due_at=now,
                source=source,
            )
        )
    session.flush()
    return len(seen)
