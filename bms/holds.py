"""Places held for the waitlist: while an offer is open (`bms.waitlist`, status `offered`), the place
it offers is kept for its candidate. A booking by anyone else that would need that place is
refused (409 `held_for_waitlist`), and availability shows it as taken to everyone else.

The check runs where a booking is placed (`bms.allocation`), so direct bookings, confirmations
and moves all respect it. The candidate's own bookings pass, and so does any accept of an offer:
two accepts racing for one place are settled by the no-double-booking guarantee.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from bms.context import ResourceCtx
from bms.models import Reservation
from bms.states import HOLDING
from core.db import ident
from core.errors import Conflict

OFFERED = "offered"  # bms.waitlist's status of an open offer
# Set on the session while bms.waitlist books an accepted offer: offers do not hold a place
# against each other (a manager may offer one place to several; the first accept wins).
ACCEPTING = "bms.holds.accepting"
MAX_BUFFER = timedelta(days=1)  # Rules.buffer_minutes is at most a day


@dataclass(frozen=True)
class Hold:
    """An open offer's window, shaped like a booking for counting places."""

    entry_id: int
    user_id: int
    start: datetime
    end: datetime
    block_start: datetime
    block_end: datetime
    places: int


def holds(
    session: Session, ctx: ResourceCtx, start: datetime, end: datetime, *, except_user: int | None = None
) -> list[Hold]:
    """Open offers of the resource overlapping [start, end) (buffers included), but `except_user`'s."""
    buffer = ctx.rules.buffer
    params = {"rid": ctx.resource.id, "end": end, "after": start - buffer}
    if except_user is not None:
        params["except_user"] = except_user
    found = session.exec(_offers(except_user is not None), params=params).all()
    return [Hold(ident(e), e.user_id, e.start, e.end, e.start, e.end + buffer, e.places) for e in found]


@functools.cache
def _offers(but_one_user: bool) -> Any:
    """Open offers of a resource overlapping a span, built once (checked before every booking)."""
    from bms.waitlist import WaitlistEntry  # the waitlist builds on allocation; read its table lazily

    stmt = select(WaitlistEntry).where(
        col(WaitlistEntry.resource_id) == bindparam("rid"),
        col(WaitlistEntry.status) == OFFERED,
        col(WaitlistEntry.start) < bindparam("end"),
        col(WaitlistEntry.end) > bindparam("after"),
    )
    return stmt.where(col(WaitlistEntry.user_id) != bindparam("except_user")) if but_one_user else stmt


def free_with_holds(
    session: Session, ctx: ResourceCtx, block_start: datetime, block_end: datetime, places: int, held: list[Hold]
) -> bool:
    """Whether `places` fit in the block beside the bookings holding it and the `held` offers."""
    from bms.allocation import holding_overlaps, peak_places  # allocation calls this module

    others = holding_overlaps(session, [ident(u) for u in ctx.units], block_start, block_end)
    if ctx.exclusive:
        # each booking and each offer takes a whole unit
        busy = len({o.unit_id for o in others})
        return busy + len(held) < len(ctx.units)
    return peak_places([*others, *held], block_start, block_end) + places <= ctx.resource.capacity  # type: ignore[list-item]


def check_not_held(session: Session, ctx: ResourceCtx, r: Reservation) -> None:
    """Refuse (409 `held_for_waitlist`) a booking that would take a place an open offer holds for
    someone else. Bookings that do not take a place (pending requests) pass."""
    if r.status not in HOLDING or session.info.get(ACCEPTING):
        return
    held = holds(session, ctx, r.block_start, r.block_end, except_user=r.planner_id)
    if not held:
        return
    from bms.allocation import holding_overlaps, peak_places  # allocation calls this module

    others = holding_overlaps(session, [ident(u) for u in ctx.units], r.block_start, r.block_end, r.id)
    if ctx.exclusive:
        fits = len({o.unit_id for o in others}) + len(held) < len(ctx.units)
    else:
        fits = peak_places([*others, *held], r.block_start, r.block_end) + r.places <= ctx.resource.capacity  # type: ignore[list-item]
    if not fits:
        first = min(held, key=lambda h: h.start)
        raise Conflict(
            "held_for_waitlist",
            "this place is held for someone on the waitlist until their offer closes",
            held_window={"start": first.start.isoformat(), "end": first.end.isoformat()},
        )


def held_rows(
    session: Session, resource_ids: list[int], start: datetime, end: datetime
) -> list[tuple[int, int, int, int, int]]:
    """Open offers touching [start, end) for availability: (resource id, block start, block end as
    epoch seconds, a unit id of their own (negative), places). Shown taken to everyone."""
    from bms.context import load_resource_by_id
    from bms.waitlist import WaitlistEntry

    if not resource_ids:
        return []
    rows = session.exec(
        select(WaitlistEntry).where(
            col(WaitlistEntry.resource_id).in_(resource_ids),
            col(WaitlistEntry.status) == OFFERED,
            col(WaitlistEntry.start) < end,
            col(WaitlistEntry.end) > start - MAX_BUFFER,
        )
    ).all()
    out = []
    for e in rows:
        block_end = e.end + load_resource_by_id(session, e.resource_id).rules.buffer
        if block_end > start:
            out.append((e.resource_id, int(e.start.timestamp()), int(block_end.timestamp()), -ident(e), e.places))
    return out
