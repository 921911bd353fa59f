"""How the booking side (and visits, and access levels) tell access who may enter: one call, in
the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import insert
from sqlmodel import Session, col, delete, select

from access.decisions import note_source
from access.models import AccessWindow
from access.transitions import NewWindow, plan_new_source, plan_source, plan_sources
from core.db import utcnow

# One window row: (user_id, resource_id, door_id, start, end, mode); exactly one target is set.
Row = tuple[int, int | None, int | None, datetime, datetime, str]


def set_windows(
    session: Session,
    source_type: str,
    source_id: int,
    resource_id: int | None,
    user_ids: Sequence[int],
    start: datetime,
    end: datetime,
    mode: str,
    *,
    active: bool,
    door_ids: Sequence[int] = (),
    new_source: bool = False,
) -> None:
    """Replace the source's windows while active, none once it is over or cancelled: for each user,
    one on the resource (its doors) when `resource_id` is given and one on each of `door_ids`
    (doors added to a reservation, a visit's doors).

    Nothing changed (a check-in, say) writes nothing: no transitions re-planned, no change logged.
    `new_source`: the source was written in this transaction and has no windows yet."""
    rows: list[Row] = []
    if active:
        for uid in dict.fromkeys(user_ids):
            if resource_id is not None:
                rows.append((uid, resource_id, None, start, end, mode))
            rows += [(uid, None, door, start, end, mode) for door in dict.fromkeys(door_ids)]
    if new_source:
        add_source_windows(session, source_type, source_id, rows)
    else:
        set_source_windows(session, source_type, source_id, rows)


_WINDOWS = AccessWindow.__table__  # type: ignore[attr-defined]


def add_source_windows(session: Session, source_type: str, source_id: int, rows: Iterable[Row]) -> None:
    """The first windows of a source written in this transaction: inserted in one statement and
    planned from what is given, with nothing earlier to look for, replace or take back."""
    wanted = sorted(set(rows), key=lambda r: (r[0], r[3], r[2] or 0))
    if not wanted:
        return
    windows = [NewWindow(source_id, *row) for row in wanted]
    session.execute(_INSERT_WINDOWS, [{"source_type": source_type, **w._asdict()} for w in windows])
    note_source(session, f"{source_type}:{source_id}")
    plan_new_source(session, source_type, windows, utcnow())


_INSERT_WINDOWS = insert(_WINDOWS)


def set_source_windows(session: Session, source_type: str, source_id: int, rows: Iterable[Row]) -> bool:
    """Replace the source's windows by `rows` (any number per user and target: a level's weekly
    intervals); returns whether anything changed. Only a change re-plans the source's transitions
    and is logged for the decision index."""
    existing = session.exec(
        select(AccessWindow).where(
            col(AccessWindow.source_type) == source_type, col(AccessWindow.source_id) == source_id
        )
    ).all()
    wanted = set(rows)
    changed = False
    for w in existing:
        key = (w.user_id, w.resource_id, w.door_id, w.start, w.end, w.mode)
        if key in wanted:
            wanted.discard(key)
        else:
            session.delete(w)
            changed = True
    if not changed and not wanted:
        return False
    for uid, resource_id, door_id, start, end, mode in sorted(wanted, key=lambda r: (r[0], r[3], r[2] or 0)):
        session.add(
            AccessWindow(
                source_type=source_type,
                source_id=source_id,
                resource_id=resource_id,
                door_id=door_id,
                user_id=uid,
                start=start,
                end=end,
                mode=mode,
            )
        )
    note_source(session, f"{source_type}:{source_id}")
    session.flush()
    plan_source(session, source_type, source_id)
    return True


def replace_sources(session: Session, source_type: str, rows_of: Mapping[int, Iterable[Row]]) -> None:
    """Replace the windows of many sources of one type at once (the caller knows they changed):
    a few statements per 500 sources instead of a dozen per source, then one planning pass."""
    ids = sorted(rows_of)
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        session.exec(
            delete(AccessWindow).where(
                col(AccessWindow.source_type) == source_type, col(AccessWindow.source_id).in_(chunk)
            )
        )
        windows = [
            {
                "source_type": source_type,
                "source_id": sid,
                "user_id": uid,
                "resource_id": resource_id,
                "door_id": door_id,
                "start": start,
                "end": end,
                "mode": mode,
            }
            for sid in chunk
            for uid, resource_id, door_id, start, end, mode in sorted(
                set(rows_of[sid]), key=lambda r: (r[0], r[3], r[2] or 0)
            )
        ]
        if windows:
            session.execute(insert(AccessWindow), windows)
        for sid in chunk:
            note_source(session, f"{source_type}:{sid}")
        session.flush()
    plan_sources(session, source_type, ids)


def replan_user(session: Session, user_id: int, now: datetime) -> int:
    """A person's credentials changed: re-plan every source that lets them in and is not over."""
    sources = session.exec(
        select(AccessWindow.source_type, AccessWindow.source_id)
        .where(col(AccessWindow.user_id) == user_id, col(AccessWindow.end) > now)
        .distinct()
    ).all()
    for source_type, source_id in sources:
        plan_source(session, source_type, source_id, now)
    return len(sources)
