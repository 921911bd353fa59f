"""How the booking side tells access who may enter: one call, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from access.decisions import note_source
from access.models import AccessWindow
from access.transitions import plan_source


def set_windows(
    session: Session,
    source_type: str,
    source_id: int,
    resource_id: int,
    user_ids: Sequence[int],
    start: datetime,
    end: datetime,
    mode: str,
    *,
    active: bool,
) -> None:
    """Replace the source's windows: one per user while active, none once it is over or cancelled.

    Nothing changed (a check-in, say) writes nothing: no transitions re-planned, no change logged."""
    existing = session.exec(
        select(AccessWindow).where(
            col(AccessWindow.source_type) == source_type, col(AccessWindow.source_id) == source_id
        )
    ).all()
    wanted = set(user_ids) if active else set()
    changed = False
    for w in existing:
        if w.user_id not in wanted:
            session.delete(w)
            changed = True
            continue
        wanted.discard(w.user_id)
        if (w.resource_id, w.start, w.end, w.mode) != (resource_id, start, end, mode):
            w.resource_id, w.start, w.end, w.mode = resource_id, start, end, mode
            session.add(w)
            changed = True
    if not changed and not wanted:
        return
    for uid in sorted(wanted):
        session.add(
            AccessWindow(
                source_type=source_type,
                source_id=source_id,
                resource_id=resource_id,
                user_id=uid,
                start=start,
                end=end,
                mode=mode,
            )
        )
    note_source(session, f"{source_type}:{source_id}")
    session.flush()
    plan_source(session, source_type, source_id)


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
