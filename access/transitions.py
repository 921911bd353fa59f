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

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from sqlalchemy import and_, bindparam, insert, or_
from sqlmodel import Session, col, delete, select

from access.desired import PRELOADED
from access.models import AccessWindow, Credential, Door, DoorResource, Transition
from core.db import utcnow

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
    return plan_sources(session, source_type, [source_id], now)


_CHUNK = 500


def plan_sources(session: Session, source_type: str, source_ids: Sequence[int], now: datetime | None = None) -> int:
    """`plan_source` for many sources of one type at once, in a few statements per 500 sources
    (a level's thousands of holders); returns how many transitions were planned."""
    now = now or utcnow()
    planned = 0
    ids = list(dict.fromkeys(source_ids))
    for i in range(0, len(ids), _CHUNK):
        planned += _plan_chunk(session, source_type, ids[i : i + _CHUNK], now)
    return planned


def _plan_chunk(session: Session, source_type: str, source_ids: list[int], now: datetime) -> int:
    sources = [f"{source_type}:{sid}" for sid in source_ids]
    session.exec(
        delete(Transition).where(
            col(Transition.source).in_(sources), col(Transition.status) == "pending", not_in_flight(now)
        )
    )
    windows = session.exec(
        select(AccessWindow).where(
            col(AccessWindow.source_type) == source_type, col(AccessWindow.source_id).in_(source_ids)
        )
    ).all()
    planned = _insert_planned(session, source_type, windows, now)
    # A changed window may have left an earlier grant behind, and a source with no window left
    # must take back what it granted: settle it now, the state decides.
    _revoke_done(session, sources, now)
    session.flush()
    return planned


class PlannedWindow(Protocol):
    """What planning reads of a window: a stored `AccessWindow`, or one being written (`NewWindow`)."""

    @property
    def source_id(self) -> int: ...
    @property
    def user_id(self) -> int: ...
    @property
    def resource_id(self) -> int | None: ...
    @property
    def door_id(self) -> int | None: ...
    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime: ...
    @property
    def mode(self) -> str: ...


class NewWindow(NamedTuple):
    """A window inserted in this transaction, planned from its values (no ORM object to build)."""

    source_id: int
    user_id: int
    resource_id: int | None
    door_id: int | None
    start: datetime
    end: datetime
    mode: str


def plan_new_source(session: Session, source_type: str, windows: Sequence[PlannedWindow], now: datetime) -> int:
    """The transitions of a source written just now, whose windows are given (not read back): it
    has no earlier transition to replace or take back."""
    return _insert_planned(session, source_type, windows, now)


# Built once (parameters bound per call). Planning needs a door's id and controller only: plain
# columns, no ORM object per door.
_TRANSITIONS = Transition.__table__  # type: ignore[attr-defined]
_INSERT_TRANSITIONS = insert(_TRANSITIONS)  # every column given: no ORM pass needed
_LINKED_DOORS = (
    select(DoorResource.resource_id, Door.id, Door.controller_id)
    .join(Door, col(Door.id) == DoorResource.door_id)
    .where(col(DoorResource.resource_id).in_(bindparam("resources", expanding=True)), Door.active)
)
_DIRECT_DOORS = select(Door.id, Door.controller_id).where(
    col(Door.id).in_(bindparam("doors", expanding=True)), Door.active
)
_LIVE_CREDENTIALS = select(Credential.id, Credential.user_id).where(
    col(Credential.user_id).in_(bindparam("users", expanding=True)), col(Credential.revoked_at).is_(None)
)


def _insert_planned(session: Session, source_type: str, windows: Sequence[PlannedWindow], now: datetime) -> int:
    """Insert the transitions `windows` need (their doors and the holders' live credentials)."""
    resource_ids = {w.resource_id for w in windows if w.resource_id is not None}
    doors_of: dict[int, list[int]] = defaultdict(list)
    controller_of: dict[int, int] = {}  # active door -> its controller
    if resource_ids:  # the resources' active doors, with their links, in one query
        for resource_id, door_id, controller_id in session.execute(
            _LINKED_DOORS, {"resources": list(resource_ids)}
        ).all():
            doors_of[resource_id].append(door_id)
            controller_of[door_id] = controller_id
    direct = {w.door_id for w in windows if w.door_id is not None} - controller_of.keys()
    if direct:
        controller_of |= dict(session.execute(_DIRECT_DOORS, {"doors": list(direct)}).tuples().all())
    creds_of: dict[int, list[int]] = defaultdict(list)
    users = {w.user_id for w in windows}
    if users:
        for cid, uid in session.execute(_LIVE_CREDENTIALS, {"users": list(users)}).all():
            if cid is not None:
                creds_of[uid].append(cid)
    rows: list[dict] = []
    earliest: datetime | None = None

    def add(door_id: int, cred_id: int | None, action: str, due: datetime, source: str) -> None:
        nonlocal earliest
        earliest = due if earliest is None or due < earliest else earliest
        rows.append(
            {
                "controller_id": controller_of[door_id],
                "door_id": door_id,
                "credential_id": cred_id,
                "action": action,
                "due_at": due,
                "source": source,
                "status": "pending",
                "attempts": 0,
            }
        )

    for w in windows:
        source = f"{source_type}:{w.source_id}"
        targets = list(doors_of.get(w.resource_id, ())) if w.resource_id is not None else []
        if w.door_id is not None and w.door_id not in targets:
            targets.append(w.door_id)
        for door_id in targets:
            if door_id not in controller_of:
                continue  # gone or inactive
            if w.mode == "free":
                add(door_id, None, "open", w.start, source)
                add(door_id, None, "close", w.end, source)
                continue
            if w.mode not in PRELOADED:
                continue  # decided online at each presentation: nothing to store on the controller
            for cid in creds_of.get(w.user_id, ()):
                add(door_id, cid, "grant", max(now, w.start - PRELOAD), source)
                add(door_id, cid, "revoke", w.end, source)
    if rows:
        assert earliest is not None
        _note_due(session, earliest)
        session.execute(_INSERT_TRANSITIONS, rows)
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


def _revoke_done(session: Session, sources: list[str], now: datetime) -> int:
    """One revoke (or close), due now, for every door and card each source may have granted:
    grants done, and grants in flight whose acknowledgement has not come back yet."""
    done = session.exec(
        select(Transition.source, Transition.controller_id, Transition.door_id, Transition.credential_id).where(
            col(Transition.source).in_(sources),
            or_(col(Transition.status) == "done", in_flight(now)),
            col(Transition.action).in_(["grant", "open"]),
        )
    ).all()
    seen = set()
    rows = []
    for source, controller_id, door_id, credential_id in done:
        key = (source, door_id, credential_id)
        if key in seen:
            continue
        seen.add(key)
        rows.append(
            {
                "controller_id": controller_id,
                "door_id": door_id,
                "credential_id": credential_id,
                "action": "revoke" if credential_id else "close",
                "due_at": now,
                "source": source,
                "status": "pending",
                "attempts": 0,
            }
        )
    if rows:
        _note_due(session, now)
        session.execute(insert(Transition), rows)
    session.flush()
    return len(seen)
