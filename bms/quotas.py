"""Quotas: how many live bookings one person may hold, and time budgets per person or household.

A booking is checked as it will be after the write: a new one, or an existing one on new times
(counted without its old self). PostgreSQL: two bookings of one person (or household) in parallel
would each count without the other's uncommitted row and both pass, so the counted people's rows
are locked first (`FOR NO KEY UPDATE`, in id order, which foreign-key checks do not wait on) and
such checks run one after the other. SQLite: the writer lock held since BEGIN IMMEDIATE does that.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import bindparam, func
from sqlmodel import Session, col, select

from bms.context import ResourceCtx
from bms.models import Reservation, Resource
from bms.states import ACTIVE
from core.db import is_sqlite
from core.errors import Conflict
from core.models import User

__all__ = ["check_quotas", "counts_planner_alone", "lock_planner"]


def _window_peak(intervals: list[tuple[datetime, datetime]], new: tuple[datetime, datetime], days: int) -> int:
    """Largest booked minutes in any `days`-long window that overlaps the new booking."""
    span = timedelta(days=days)
    candidates = {new[0], new[1] - span}
    for a, z in intervals:
        candidates |= {a, z - span}
    best = 0
    for w in candidates:
        if not (w < new[1] and w + span > new[0]):
            continue
        total = sum(max(0.0, (min(z, w + span) - max(a, w)).total_seconds()) for a, z in [*intervals, new])
        best = max(best, int(total // 60))
    return best


def _budget_planners(session: Session, ctx: ResourceCtx, planner: User) -> dict[str, list[int]]:
    """Whose bookings each budget `per` counts: the planner alone, or the planner's household."""
    out = {"user": [planner.id]}
    group = ctx.resource.quota_group
    if group and planner.unit and any(b.group == group and b.per == "unit" for b in ctx.rules.budgets):
        out["unit"] = list(session.exec(select(User.id).where(col(User.unit) == planner.unit)).all())
    return out  # type: ignore[return-value]


def counts_planner_alone(ctx: ResourceCtx) -> bool:
    """Whether the quotas of this resource count the planner's bookings only (no household budget)."""
    group = ctx.resource.quota_group
    return not (group and any(b.group == group and b.per == "unit" for b in ctx.rules.budgets))


def lock_planner(session: Session, user_id: int) -> User | None:
    """Load the planner, locked as `check_quotas` locks the people it counts (PostgreSQL), in one
    query: for a resource whose quotas count the planner alone (`counts_planner_alone`)."""
    stmt = _PLANNER if is_sqlite(session) else _PLANNER_LOCKED
    return session.exec(stmt, params={"uid": user_id}).first()


# Built once (the planner's id bound per call): the first read of every booking.
_PLANNER = select(User).where(col(User.id) == bindparam("uid"))
_PLANNER_LOCKED = _PLANNER.with_for_update(key_share=True)


def _lock_people(session: Session, user_ids: set[int]) -> None:
    if is_sqlite(session):
        return
    session.exec(
        select(User.id).where(col(User.id).in_(sorted(user_ids))).order_by(col(User.id)).with_for_update(key_share=True)
    ).all()


# Built once (parameters bound per call): the live bookings a person holds, the one moved excepted.
_ACTIVE = (
    select(func.count())
    .select_from(Reservation)
    .where(
        col(Reservation.planner_id) == bindparam("planner"),
        col(Reservation.status).in_([s.value for s in ACTIVE]),
        col(Reservation.end) > bindparam("now"),
    )
)
_ACTIVE_BUT = _ACTIVE.where(col(Reservation.id) != bindparam("exclude"))


def check_quotas(
    session: Session,
    ctx: ResourceCtx,
    planner: User,
    start: datetime,
    end: datetime,
    now: datetime,
    exclude_id: int | None = None,
    *,
    locked: frozenset[int] = frozenset(),
) -> None:
    """409 quota_exceeded (naming the quota) if booking [start, end) for `planner` breaks one.

    `exclude_id` is the booking being moved: it is counted at its new times, not its old ones.
    `locked`: people the caller has already locked as `_lock_people` does (`lock_planner`)."""
    counted = _budget_planners(session, ctx, planner)
    people = {i for ids in counted.values() for i in ids}
    if not people <= locked:
        _lock_people(session, people)
    params = {"planner": planner.id, "now": now}
    if exclude_id is None:
        used = session.exec(_ACTIVE, params=params).one()
    else:
        used = session.exec(_ACTIVE_BUT, params={**params, "exclude": exclude_id}).one()
    limit = ctx.rules.max_active_per_user
    if used >= limit:  # with this one, there would be more than `limit`
        raise Conflict(
            "quota_exceeded",
            f"at most {limit} active reservations per user",
            quota="max_active_reservations",
            limit=limit,
            used=used,
        )
    group = ctx.resource.quota_group
    for budget in ctx.rules.budgets:
        if not group or budget.group != group:
            continue
        span = timedelta(days=budget.days)
        planners = counted.get(budget.per, counted["user"])
        stmt = (
            select(Reservation.start, Reservation.end)
            .join(Resource, col(Resource.id) == Reservation.resource_id)
            .where(
                col(Resource.quota_group) == group,
                col(Reservation.planner_id).in_(planners),
                col(Reservation.status).in_([s.value for s in ACTIVE]),
                col(Reservation.start) < end + span,
                col(Reservation.end) > start - span,
            )
        )
        if exclude_id is not None:
            stmt = stmt.where(col(Reservation.id) != exclude_id)
        intervals = [(a, z) for a, z in session.exec(stmt).all()]
        peak = _window_peak(intervals, (start, end), budget.days)
        if peak > budget.minutes:
            used_now = _window_peak(intervals, (start, start), budget.days)
            raise Conflict(
                "quota_exceeded",
                f"at most {budget.minutes} minutes of {group} per {budget.days} days per {budget.per}",
                quota=f"budget:{group}",
                per=budget.per,
                limit_minutes=budget.minutes,
                used_minutes=used_now,
                window_days=budget.days,
            )
