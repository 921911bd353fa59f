"""Door events: stored, linked to the window that explains them, and listened to.

An event names a controller, maybe a relay and a presented card. It is tied to the door on that
relay, to the credential and its owner, and to the access window (hence the reservation or
visit) that covered that person at that door at that moment. A granted entry is offered to the
listener registered for the window's source type: bms checks a reservation in on its first one.
Access never imports the booking side; the composition root wires the listener.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel
from sqlalchemy import case, or_
from sqlmodel import Session, col, select

from access.models import AccessEvent, AccessWindow, Controller, Credential, Door, DoorResource, lookup_token
from access.protocol import DoorEvent, presented_key
from core import outbox
from core.auth import Principal
from core.db import ident
from core.errors import Invalid, NotFound
from core.models import Site, User

log = logging.getLogger("bookgate.events")

# (session, source id, user id, when, door key): called in the event's transaction.
EntryListener = Callable[[Session, int, int, datetime, str], object]

MAX_DETAIL_KEYS = 20


@dataclass
class EntryListeners:
    """Who is told of a granted entry, by the source type of the window that explains it.

    Built by the composition root (bms checks a reservation in) and passed to ``record``: an
    object, not a module registry, so two apps in one process never share listeners."""

    by_source: dict[str, EntryListener] = field(default_factory=dict)

    def notify(self, session: Session, window: AccessWindow, at: datetime, door_key: str) -> None:
        listener = self.by_source.get(window.source_type)
        if listener is not None:
            listener(session, window.source_id, window.user_id, at, door_key)


def _door_for(session: Session, controller: Controller, output: int | None) -> Door | None:
    doors = session.exec(select(Door).where(col(Door.controller_id) == controller.id, Door.active)).all()
    if output is not None:
        return next((d for d in doors if d.output == output), None)
    return doors[0] if len(doors) == 1 else None  # a tamper report names no relay


def credential_for(session: Session, kind: str, value: str, spellings: tuple[str, ...] = ("hex",)) -> Credential | None:
    """The credential a reader's string names. Badges are tried in each spelling the reader may use
    (the controller's driver says which); other kinds are compared as stored."""
    if kind != "badge":  # PINs and BLE keys are stored as a keyed token (`lookup_token`), never in clear
        token = lookup_token(kind, value)
        return session.exec(
            select(Credential).where(col(Credential.kind) == kind, col(Credential.value) == token)
        ).first()
    for spelling in spellings:
        key = presented_key(spelling, value)
        if key is None:
            continue
        if spelling == "hex_compact":
            where = (col(Credential.format) == "uid", col(Credential.compact) == key)
        elif spelling == "hex":
            where = (col(Credential.format).in_(["uid", "em4100"]), col(Credential.value) == key)
        else:
            where = (col(Credential.format) == "wiegand", col(Credential.value) == key)
        found = session.exec(
            select(Credential)
            .where(col(Credential.kind) == "badge", *where)
            .order_by(case((col(Credential.revoked_at).is_(None), 0), else_=1))
        ).first()
        if found is not None:
            return found
    return None


def explaining_window(session: Session, door_id: int, user_id: int, at: datetime) -> AccessWindow | None:
    resources = select(DoorResource.resource_id).where(col(DoorResource.door_id) == door_id)
    return session.exec(
        select(AccessWindow)
        .where(
            col(AccessWindow.user_id) == user_id,
            or_(col(AccessWindow.resource_id).in_(resources), col(AccessWindow.door_id) == door_id),
            col(AccessWindow.start) <= at,
            col(AccessWindow.end) > at,
        )
        .order_by(col(AccessWindow.start), col(AccessWindow.id))
    ).first()


def _detail(raw: dict) -> dict:
    """Keep the controller's own words, bounded (drivers already cap payload sizes)."""
    out = {}
    for k, v in list(raw.items())[:MAX_DETAIL_KEYS]:
        out[str(k)[:40]] = v if isinstance(v, int | float | bool | None) else str(v)[:200]
    return out


def record(
    session: Session,
    event: DoorEvent,
    *,
    decided_by: str = "controller",
    credential_kind: str = "badge",
    listeners: EntryListeners | None = None,
) -> AccessEvent | None:
    """Store one event, and offer a granted entry to ``listeners``; returns None for a controller
    the database does not know."""
    ctl = session.exec(select(Controller).where(col(Controller.key) == event.controller_key)).first()
    if ctl is None:
        log.warning("door event from unknown controller %r ignored", event.controller_key)
        return None
    door = _door_for(session, ctl, event.door_output)
    cred = (
        credential_for(session, credential_kind, event.credential_uid, event.spellings)
        if event.credential_uid
        else None
    )
    window = explaining_window(session, ident(door), cred.user_id, event.at) if door and cred else None
    source = f"{window.source_type}:{window.source_id}" if window else None
    row = AccessEvent(
        at=event.at,
        controller_id=ident(ctl),
        door_id=door.id if door else None,
        kind=event.kind,
        # A card UID is an identifier; a PIN or a QR secret is never written down.
        presented=event.credential_uid[:128] if event.credential_uid and credential_kind in ("badge", "key") else None,
        credential_id=cred.id if cred else None,
        user_id=cred.user_id if cred else None,
        source=source,
        decided_by=decided_by,
        detail=_detail(event.raw),
    )
    session.add(row)
    session.flush()
    if event.kind == "key_overdue":  # the venue's managers and the admins are told (notify delivers it)
        holder = session.get(User, cred.user_id) if cred else None
        site = session.get(Site, ctl.site_id)
        outbox.enqueue(
            session,
            "access.key_overdue",
            {
                "controller": ctl.key,
                "door": door.name if door else ctl.name,
                "holder": holder.name if holder else "",
                "at": event.at.isoformat(),
                "site": site.key if site else "",
            },
        )
    if event.kind == "granted" and window is not None and door is not None and listeners is not None:
        listeners.notify(session, window, event.at, door.key)
    return row


# ---------------------------------------------------------------- reading


class EventPublic(BaseModel):
    id: int
    at: datetime
    kind: str
    controller: str
    door: str | None
    presented: str | None
    credential_id: int | None
    user_id: int | None
    source: str | None
    decided_by: str


EventKind = Literal[
    "granted", "denied", "forced", "held_open", "tamper", "unknown", "key_taken", "key_returned", "key_overdue"
]


def list_events(
    session: Session,
    principal: Principal,
    *,
    visible_door_ids: set[int] | None,
    door: str | None = None,
    kind: list[str] | None = None,
    user_id: int | None = None,
    source: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[EventPublic]:
    """Newest first. Staff see their doors' events (`visible_door_ids`); others only their own."""
    stmt = select(AccessEvent)
    if visible_door_ids is None:
        stmt = stmt.where(col(AccessEvent.user_id) == principal.user_id)
    elif not principal.admin:
        stmt = stmt.where(col(AccessEvent.door_id).in_(visible_door_ids))
    if door is not None:
        row = session.exec(select(Door).where(col(Door.key) == door)).first()
        if row is None or (visible_door_ids is not None and not principal.admin and row.id not in visible_door_ids):
            raise NotFound("door_not_found", f"no door {door!r}", field="door")
        stmt = stmt.where(col(AccessEvent.door_id) == row.id)
    if kind:
        bad = [k for k in kind if k not in get_args(EventKind)]
        if bad:
            raise Invalid("bad_kind", f"unknown event kind {bad[0]!r}", field="kind")
        stmt = stmt.where(col(AccessEvent.kind).in_(kind))
    if user_id is not None:
        stmt = stmt.where(col(AccessEvent.user_id) == user_id)
    if source is not None:
        stmt = stmt.where(col(AccessEvent.source) == source)
    if since is not None:
        stmt = stmt.where(col(AccessEvent.at) >= since)
    if until is not None:
        stmt = stmt.where(col(AccessEvent.at) < until)
    rows = session.exec(
        stmt.order_by(col(AccessEvent.at).desc(), col(AccessEvent.id).desc()).offset(offset).limit(limit)
    ).all()
    ctl = {c.id: c.key for c in session.exec(select(Controller)).all()}
    door_ids = {r.door_id for r in rows if r.door_id}
    doors = (
        {d.id: d.key for d in session.exec(select(Door).where(col(Door.id).in_(door_ids))).all()} if door_ids else {}
    )
    return [
        EventPublic(
            id=r.id,
            at=r.at,
            kind=r.kind,
            controller=ctl.get(r.controller_id, "?"),
            door=doors.get(r.door_id) if r.door_id else None,
            presented=r.presented,
            credential_id=r.credential_id,
            user_id=r.user_id,
            source=r.source,
            decided_by=r.decided_by,
        )
        for r in rows
    ]
