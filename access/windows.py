"""How the booking side tells access who may enter: one call, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, select

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
    """Replace the source's windows: one per user while active, none once it is over or cancelled."""
    existing = session.exec(
        select(AccessWindow).where(AccessWindow.source_type == source_type, AccessWindow.source_id == source_id)
    ).all()
    wanted = set(user_ids) if active else set()
    for w in existing:
        if w.user_id not in wanted:
            session.delete(w)
            continue
        wanted.discard(w.user_id)
        if (w.resource_id, w.start, w.end, w.mode) != (resource_id, start, end, mode):
            w.resource_id, w.start, w.end, w.mode = resource_id, start, end, mode
            session.add(w)
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
    session.flush()
    plan_source(session, source_type, source_id)

