"""Every reservation write: rules, quotas, unit allocation, the no-double-booking guarantee,
and the audit and outbox rows, all in the caller's one transaction.

No double booking is enforced by the database. PostgreSQL: an exclusion constraint over
(unit, block range) for holding statuses, so two racing inserts cannot both commit; the
check below only produces a friendly answer. SQLite: write transactions begin IMMEDIATE, so
the check and the insert run under the single writer lock. Capacity units are locked
(`FOR UPDATE`) before their places are counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from access.windows import set_windows
from bms.context import ResourceCtx, load_resource, load_resource_by_id, manages, require_can_book
from bms.models import LONG_SPAN, Reservation, ReservationBeneficiary, ReservationChange, Resource, ResourceUnit
from bms.states import ACTIVE, HOLDING, Status, check_transition
from config.site import Moderation
from core import audit, outbox
from core.auth import Principal
from core.db import is_sqlite, utcnow
from core.errors import Conflict, Forbidden, Invalid, NotFound
from core.models import User, Venue

# ---------------------------------------------------------------- schemas


class ReservationCreate(BaseModel):
    """Times must carry a UTC offset (e.g. 2026-12-01T18:00:00+01:00); a naive time is refused (422)."""

    model_config = ConfigDict(extra="forbid")
    resource: str = Field(min_length=1, max_length=63)
    start: AwareDatetime
    end: AwareDatetime
    beneficiaries: list[int] = Field(default_factory=list, max_length=200)
    places: int = Field(default=1, ge=1, le=10_000)
    note: str = Field(default="", max_length=1000)


class ReservationPublic(BaseModel):
    id: int
    resource: str
    unit: str
    planner_id: int
    beneficiaries: list[int]
    start: datetime
    end: datetime
    local_start: str
    local_end: str
    timezone: str
    access_start: datetime
    access_end: datetime
    places: int
    status: str
    status_reason: str | None
    note: str
    series_id: int | None
    occurrence_key: str | None
    detached: bool
    changes: int
    pending_change: PendingChange | None = None


class PendingChange(BaseModel):
    id: int
    start: datetime
    end: datetime
    requested_at: datetime


def pending_change(session: Session, reservation_id: int) -> ReservationChange | None:
    return session.exec(
        select(ReservationChange).where(
            ReservationChange.reservation_id == reservation_id, ReservationChange.status == "pending"
        )
    ).first()


def public(session: Session, r: Reservation, ctx: ResourceCtx | None = None) -> ReservationPublic:
    ctx = ctx or load_resource_by_id(session, r.resource_id)
    unit = next((u for u in ctx.units if u.id == r.unit_id), None) or session.get(ResourceUnit, r.unit_id)
    bens = session.exec(
        select(ReservationBeneficiary.user_id).where(ReservationBeneficiary.reservation_id == r.id)
    ).all()
    tz = ctx.rules.tz
    held = pending_change(session, r.id) if r.status == Status.confirmed else None  # type: ignore[arg-type]
    return ReservationPublic(
        id=r.id,  # type: ignore[arg-type]
        resource=ctx.resource.key,
        unit=unit.key,  # type: ignore[union-attr]
        planner_id=r.planner_id,
        beneficiaries=sorted(bens),
        start=r.start,
        end=r.end,
        local_start=r.start.astimezone(tz).isoformat(),
        local_end=r.end.astimezone(tz).isoformat(),
        timezone=ctx.site.timezone,
        access_start=r.access_start,
        access_end=r.access_end,
        places=r.places,
        status=r.status,
        status_reason=r.status_reason,
        note=r.note,
        series_id=r.series_id,
        occurrence_key=r.occurrence_key,
        detached=r.detached,
        changes=r.changes,
        pending_change=PendingChange(id=held.id, start=held.start, end=held.end, requested_at=held.created_at)  # type: ignore[arg-type]
        if held
        else None,
    )


def _event(r: Reservation, ctx: ResourceCtx) -> dict[str, Any]:
    return {
        "reservation_id": r.id,
        "resource": ctx.resource.key,
        "start": r.start.isoformat(),
        "end": r.end.isoformat(),
        "status": r.status,
        "planner_id": r.planner_id,
    }


# ---------------------------------------------------------------- overlap and allocation


def holding_overlaps(
    session: Session,
    unit_ids: Iterable[int],
    block_start: datetime,
    block_end: datetime,
    exclude_id: int | None = None,
) -> list[Reservation]:
    stmt = select(Reservation).where(
        col(Reservation.unit_id).in_(list(unit_ids)),
        col(Reservation.status).in_([s.value for s in HOLDING]),
        Reservation.block_start < block_end,
        Reservation.block_end > block_start,
    )
    if exclude_id is not None:
        stmt = stmt.where(Reservation.id != exclude_id)
    return list(session.exec(stmt).all())


def peak_places(bookings: Iterable[Reservation], start: datetime, end: datetime) -> int:
    """The most places in use at any instant of [start, end)."""
    edges: list[tuple[datetime, int]] = []
    for b in bookings:
        a, z = max(b.block_start, start), min(b.block_end, end)
        if a < z:
            edges += [(a, b.places), (z, -b.places)]
    peak = used = 0
    for _, delta in sorted(edges, key=lambda e: (e[0], e[1])):
        used += delta
        peak = max(peak, used)
    return peak


def _slot_taken(conflict: Reservation | None, **extra: Any) -> Conflict:
    window = {"start": conflict.start.isoformat(), "end": conflict.end.isoformat()} if conflict else None
    return Conflict("slot_taken", "this time is already booked", conflicting_window=window, **extra)


def _unit_order(session: Session, ctx: ResourceCtx, start: datetime, prefer: int | None) -> list[ResourceUnit]:
    units = list(ctx.units)
    if ctx.resource.pool_strategy == "balancing" and len(units) > 1:
        horizon = timedelta(days=30)
        rows = session.exec(
            select(Reservation.unit_id, func.count())
            .where(
                col(Reservation.unit_id).in_([u.id for u in units]),
                col(Reservation.status).in_([s.value for s in HOLDING]),
                Reservation.start > start - horizon,
                Reservation.start < start + horizon,
            )
            .group_by(Reservation.unit_id)
        ).all()
        use = dict(rows)
        units.sort(key=lambda u: (use.get(u.id, 0), u.position, u.id))
    if prefer is not None:
        units.sort(key=lambda u: u.id != prefer)
    return units


def _is_exclusion_violation(exc: IntegrityError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == "23P01"


_INTENT = (
    "start",
    "end",
    "block_start",
    "block_end",
    "long_span",
    "access_start",
    "access_end",
    "places",
    "status",
    "updated_at",
)


def place(session: Session, ctx: ResourceCtx, r: Reservation, *, prefer_unit: int | None = None) -> None:
    """Assign `r` a unit and flush it, or raise 409 slot_taken. `r.block_*` must be set."""
    # Explicit flushes only: an autoflush of a moved booking must not fire outside its savepoint.
    with session.no_autoflush:
        _place(session, ctx, r, prefer_unit)


def _place(session: Session, ctx: ResourceCtx, r: Reservation, prefer_unit: int | None) -> None:
    holding = r.status in HOLDING
    if not ctx.units:
        raise Conflict("no_units", "this resource has no active unit to book")
    if not ctx.exclusive:
        unit = ctx.units[0]
        if holding:
            if not is_sqlite(session):
                session.exec(select(ResourceUnit.id).where(ResourceUnit.id == unit.id).with_for_update()).one()
            others = holding_overlaps(session, [unit.id], r.block_start, r.block_end, r.id)  # type: ignore[list-item]
            used = peak_places(others, r.block_start, r.block_end)
            if used + r.places > ctx.resource.capacity:
                raise _slot_taken(None, places_left=max(0, ctx.resource.capacity - used))
        r.unit_id = unit.id  # type: ignore[assignment]
        session.add(r)
        session.flush()
        return
    first_conflict: Reservation | None = None
    # A rolled-back savepoint expires (or expunges) `r`: keep what we meant to write.
    intent = {k: getattr(r, k) for k in _INTENT}
    for unit in _unit_order(session, ctx, r.start, prefer_unit):
        for k, v in intent.items():
            setattr(r, k, v)
        if holding:
            clash = holding_overlaps(session, [unit.id], r.block_start, r.block_end, r.id)  # type: ignore[list-item]
            if clash:
                first_conflict = first_conflict or min(clash, key=lambda c: c.start)
                continue
        r.unit_id = unit.id  # type: ignore[assignment]
        if is_sqlite(session):
            # The writer lock is held since BEGIN IMMEDIATE: the check above cannot go stale.
            session.add(r)
            session.flush()
            return
        try:
            with session.begin_nested():
                session.add(r)
                session.flush()
            return
        except IntegrityError as exc:
            if not _is_exclusion_violation(exc):
                raise
            # A concurrent booking committed on this unit after our check: try the next one.
            continue
    raise _slot_taken(first_conflict)


# ---------------------------------------------------------------- quotas


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


def check_quotas(
    session: Session,
    ctx: ResourceCtx,
    planner: User,
    start: datetime,
    end: datetime,
    now: datetime,
    exclude_id: int | None = None,
) -> None:
    active_stmt = (
        select(func.count())
        .select_from(Reservation)
        .where(
            Reservation.planner_id == planner.id,
            col(Reservation.status).in_([s.value for s in ACTIVE]),
            Reservation.end > now,
        )
    )
    if exclude_id is not None:
        active_stmt = active_stmt.where(Reservation.id != exclude_id)
    else:
        used = session.exec(active_stmt).one()
        limit = ctx.rules.max_active_per_user
        if used >= limit:
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
        planners = [planner.id]
        if budget.per == "unit" and planner.unit:
            planners = list(session.exec(select(User.id).where(User.unit == planner.unit)).all())
        stmt = (
            select(Reservation.start, Reservation.end)
            .join(Resource, col(Resource.id) == Reservation.resource_id)
            .where(
                Resource.quota_group == group,
                col(Reservation.planner_id).in_(planners),
                col(Reservation.status).in_([s.value for s in ACTIVE]),
                Reservation.start < end + span,
                Reservation.end > start - span,
            )
        )
        if exclude_id is not None:
            stmt = stmt.where(Reservation.id != exclude_id)
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


# ---------------------------------------------------------------- create


@dataclass
class Draft:
    """A validated booking request, before a unit is chosen."""

    ctx: ResourceCtx
    planner: User
    start: datetime
    end: datetime
    beneficiaries: list[int]
    places: int
    note: str
    privileged: bool


def _beneficiaries(session: Session, ids: list[int], ctx: ResourceCtx) -> list[int]:
    unique = sorted(set(ids))
    if len(unique) > ctx.rules.max_beneficiaries:
        raise Invalid(
            "too_many_beneficiaries",
            f"at most {ctx.rules.max_beneficiaries} beneficiaries",
            field="beneficiaries",
            limit=ctx.rules.max_beneficiaries,
        )
    if unique:
        found = set(session.exec(select(User.id).where(col(User.id).in_(unique), User.is_active)).all())
        missing = [i for i in unique if i not in found]
        if missing:
            raise Invalid("unknown_beneficiary", f"no active user {missing[0]}", field="beneficiaries", unknown=missing)
    return unique


def prepare(session: Session, principal: Principal, data: ReservationCreate, now: datetime) -> Draft:
    ctx = load_resource(session, data.resource)
    require_can_book(principal, ctx)
    privileged = manages(principal, ctx)
    start, end = data.start.astimezone(now.tzinfo), data.end.astimezone(now.tzinfo)
    ctx.rules.check_times(start, end, now, privileged=privileged)
    if data.places > ctx.resource.capacity:
        raise Invalid("too_many_places", f"this resource holds {ctx.resource.capacity} place(s)", field="places")
    planner = session.get(User, principal.user_id)
    bens = _beneficiaries(session, data.beneficiaries, ctx)
    return Draft(ctx, planner, start, end, bens, data.places, data.note, privileged)  # type: ignore[arg-type]


def initial_status(draft: Draft) -> Status:
    """auto: confirmed at once; manual: pending for a manager; rules: pending unless a registered
    status policy (moderation's conditions) confirms it. Managers' own bookings are confirmed."""
    if draft.privileged or draft.ctx.rules.moderation == Moderation.auto:
        return Status.confirmed
    return Status.pending


# (status, reason) for a `rules` request, or None to leave it to the next policy.
StatusPolicy = Callable[[Session, "Draft", datetime], tuple[Status, str] | None]
_status_policies: list[StatusPolicy] = []


def register_status_policy(policy: StatusPolicy) -> None:
    """The extension point for `rules` moderation: a layer above bms (moderation) plugs its
    conditions in here at composition time, so bms never imports it."""
    if policy not in _status_policies:
        _status_policies.append(policy)


def decide_status(session: Session, draft: Draft, now: datetime) -> tuple[Status, str | None]:
    status = initial_status(draft)
    if status == Status.pending and draft.ctx.rules.moderation == Moderation.rules:
        for policy in _status_policies:
            decided = policy(session, draft, now)
            if decided is not None:
                return decided
    return status, None


def insert(
    session: Session,
    principal: Principal,
    draft: Draft,
    now: datetime,
    *,
    series_id: int | None = None,
    occurrence_key: str | None = None,
    status: Status | None = None,
    skip_quotas: bool = False,
) -> Reservation:
    ctx = draft.ctx
    if not skip_quotas:
        check_quotas(session, ctx, draft.planner, draft.start, draft.end, now)
    a_start, a_end = ctx.rules.access_window(draft.start, draft.end)
    status_reason = None
    if status is None:
        status, status_reason = decide_status(session, draft, now)
    r = Reservation(
        resource_id=ctx.resource.id,  # type: ignore[arg-type]
        unit_id=ctx.units[0].id if ctx.units else 0,  # type: ignore[arg-type]
        planner_id=draft.planner.id,  # type: ignore[arg-type]
        start=draft.start,
        end=draft.end,
        block_start=draft.start,
        block_end=draft.end + ctx.rules.buffer,
        long_span=draft.end + ctx.rules.buffer - draft.start > LONG_SPAN,
        access_start=a_start,
        access_end=a_end,
        exclusive=ctx.exclusive,
        places=draft.places,
        status=status.value,
        status_reason=status_reason,
        note=draft.note,
        series_id=series_id,
        occurrence_key=occurrence_key,
    )
    place(session, ctx, r)
    for uid in draft.beneficiaries:
        session.add(ReservationBeneficiary(reservation_id=r.id, user_id=uid))  # type: ignore[arg-type]
    session.flush()
    sync_access(session, r, ctx)
    kind = "reservation.confirmed" if r.status == Status.confirmed else "reservation.requested"
    outbox.enqueue(session, kind, _event(r, ctx))
    audit.record(
        session,
        principal.actor,
        "reservation.create",
        "reservation",
        r.id,
        after={
            "resource": ctx.resource.key,
            "start": r.start,
            "end": r.end,
            "status": r.status,
            "unit_id": r.unit_id,
            "places": r.places,
        },
    )
    return r


def create(session: Session, principal: Principal, data: ReservationCreate, now: datetime | None = None) -> Reservation:
    now = now or utcnow()
    return insert(session, principal, prepare(session, principal, data, now), now)


# ---------------------------------------------------------------- read


def visible(session: Session, principal: Principal, r: Reservation, ctx: ResourceCtx | None = None) -> bool:
    if r.planner_id == principal.user_id or principal.admin:
        return True
    ctx = ctx or load_resource_by_id(session, r.resource_id)
    if manages(principal, ctx):
        return True
    return session.get(ReservationBeneficiary, (r.id, principal.user_id)) is not None


def get_visible(session: Session, principal: Principal, reservation_id: int) -> tuple[Reservation, ResourceCtx]:
    """404 for both 'does not exist' and 'not yours': existence is not leaked."""
    r = session.get(Reservation, reservation_id)
    if r is None:
        raise NotFound("reservation_not_found", f"no reservation {reservation_id}")
    ctx = load_resource_by_id(session, r.resource_id)
    if not visible(session, principal, r, ctx):
        raise NotFound("reservation_not_found", f"no reservation {reservation_id}")
    return r, ctx


def get_for_change(
    session: Session, principal: Principal, reservation_id: int
) -> tuple[Reservation, ResourceCtx, bool]:
    """The planner or a manager of the venue may change it; a beneficiary only sees it."""
    r, ctx = get_visible(session, principal, reservation_id)
    privileged = manages(principal, ctx)
    if not privileged and r.planner_id != principal.user_id:
        raise Forbidden("not_the_planner", "only the person who booked, or a manager, may change this")
    if not is_sqlite(session):
        session.refresh(r, with_for_update=True)
    return r, ctx, privileged


# ---------------------------------------------------------------- change


def _check_change_allowed(r: Reservation, ctx: ResourceCtx, privileged: bool, now: datetime, *, counts: bool) -> None:
    if r.status not in (Status.pending, Status.confirmed):
        raise Conflict("not_modifiable", f"a {r.status} reservation cannot be changed", status_from=r.status)
    if privileged:
        return
    if now > r.start - ctx.rules.change_deadline:
        minutes = int(ctx.rules.change_deadline.total_seconds() // 60)
        raise Conflict("change_deadline_passed", f"changes close {minutes} minutes before the start")
    if counts and r.changes >= ctx.rules.max_changes:
        raise Conflict("too_many_changes", f"at most {ctx.rules.max_changes} changes", limit=ctx.rules.max_changes)


def set_times(r: Reservation, ctx: ResourceCtx, start: datetime, end: datetime, now: datetime) -> None:
    """New times and what derives from them: the buffered block and the access window."""
    r.start, r.end = start, end
    r.block_start, r.block_end = start, end + ctx.rules.buffer
    r.long_span = r.block_end - r.block_start > LONG_SPAN
    r.access_start, r.access_end = ctx.rules.access_window(start, end)
    r.updated_at = now


def move(
    session: Session,
    ctx: ResourceCtx,
    r: Reservation,
    start: datetime,
    end: datetime,
    planner: User,
    now: datetime,
    *,
    privileged: bool,
) -> None:
    """Put an existing booking on new times (same resource), keeping its unit if it is free."""
    ctx.rules.check_times(start, end, now, privileged=privileged)
    check_quotas(session, ctx, planner, start, end, now, exclude_id=r.id)
    set_times(r, ctx, start, end, now)
    place(session, ctx, r, prefer_unit=r.unit_id)
    sync_access(session, r, ctx)


def reschedule(
    session: Session,
    principal: Principal,
    reservation_id: int,
    start: datetime,
    end: datetime,
    now: datetime | None = None,
) -> Reservation:
    now = now or utcnow()
    r, ctx, privileged = get_for_change(session, principal, reservation_id)
    _check_change_allowed(r, ctx, privileged, now, counts=True)
    planner = session.get(User, r.planner_id)
    start, end = start.astimezone(now.tzinfo), end.astimezone(now.tzinfo)
    if not privileged and r.status == Status.confirmed and any(p(session, ctx, r) for p in _change_policies):
        _hold_change(session, principal, ctx, r, planner, start, end, now)  # type: ignore[arg-type]
        return r
    apply_change(session, principal.actor, ctx, r, planner, start, end, now, privileged=privileged)  # type: ignore[arg-type]
    return r


# Whether a change of this confirmed booking must wait for a manager (moderation plugs in here).
ChangePolicy = Callable[[Session, ResourceCtx, Reservation], bool]
_change_policies: list[ChangePolicy] = []


def register_change_policy(policy: ChangePolicy) -> None:
    if policy not in _change_policies:
        _change_policies.append(policy)


def _hold_change(
    session: Session,
    principal: Principal,
    ctx: ResourceCtx,
    r: Reservation,
    planner: User,
    start: datetime,
    end: datetime,
    now: datetime,
) -> ReservationChange:
    """Record the requested times for a manager; the booking keeps its slot until then."""
    ctx.rules.check_times(start, end, now)
    check_quotas(session, ctx, planner, start, end, now, exclude_id=r.id)
    previous = pending_change(session, r.id)  # type: ignore[arg-type]
    if previous is not None:  # the newest request replaces an undecided one
        previous.status, previous.decided_at, previous.reason = "void", now, "replaced by a newer request"
        session.add(previous)
    change = ReservationChange(
        reservation_id=r.id,
        requested_by=principal.user_id,
        start=start,
        end=end,  # type: ignore[arg-type]
        base_version=r.updated_at,
    )
    session.add(change)
    session.flush()
    outbox.enqueue(
        session,
        "reservation.change_requested",
        {**_event(r, ctx), "change_id": change.id, "new_start": start.isoformat(), "new_end": end.isoformat()},
    )
    audit.record(
        session,
        principal.actor,
        "reservation.change_requested",
        "reservation",
        r.id,
        after={"change_id": change.id, "start": start, "end": end},
    )
    return change


def apply_change(
    session: Session,
    actor: audit.Actor,
    ctx: ResourceCtx,
    r: Reservation,
    planner: User,
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    privileged: bool,
) -> None:
    """Move the booking to its new times now (a direct reschedule, or an approved change)."""
    before = {"start": r.start, "end": r.end, "unit_id": r.unit_id}
    move(session, ctx, r, start, end, planner, now, privileged=privileged)
    r.changes += 1
    if r.series_id is not None:
        r.detached = True
    session.add(r)
    session.flush()
    outbox.enqueue(session, "reservation.changed", {**_event(r, ctx), "before": {k: str(v) for k, v in before.items()}})
    audit.record(
        session,
        actor,
        "reservation.reschedule",
        "reservation",
        r.id,
        before=before,
        after={"start": r.start, "end": r.end, "unit_id": r.unit_id},
    )


def recipients(session: Session, r: Reservation) -> list[int]:
    """Who hears about a reservation: its planner and its beneficiaries."""
    bens = session.exec(
        select(ReservationBeneficiary.user_id).where(ReservationBeneficiary.reservation_id == r.id)
    ).all()
    return sorted({r.planner_id, *bens})


def transition(r: Reservation, target: Status, reason: str | None, now: datetime | None = None) -> str:
    """Move `r` to `target` if the state machine allows it; return the status it had."""
    check_transition(r.status, target)
    before = r.status
    r.status = target.value
    r.status_reason = reason
    r.updated_at = now or utcnow()
    return before


def sync_access(session: Session, r: Reservation, ctx: ResourceCtx) -> None:
    """Tell access who may enter for this booking: its beneficiaries (else its planner) during
    restrict..release while it holds its slot; nobody once it does not."""
    bens = session.exec(
        select(ReservationBeneficiary.user_id).where(ReservationBeneficiary.reservation_id == r.id)
    ).all()
    set_windows(
        session,
        "reservation",
        r.id,
        r.resource_id,
        list(bens) or [r.planner_id],  # type: ignore[arg-type]
        r.access_start,
        r.access_end,
        ctx.rules.access.mode.value,
        active=r.status in HOLDING,
    )


def announce_status(
    session: Session,
    actor: audit.Actor,
    r: Reservation,
    ctx: ResourceCtx,
    before: str,
    *,
    action: str | None = None,
    **extra: Any,
) -> None:
    """The access windows, outbox message (to the planner and beneficiaries) and audit row of a status change."""
    sync_access(session, r, ctx)
    outbox.enqueue(
        session,
        f"reservation.{r.status}",
        {
            **_event(r, ctx),
            "venue": ctx.venue.key,
            "reason": r.status_reason,
            "recipients": recipients(session, r),
            "decided_by": actor.label,
            **extra,
        },
    )
    audit.record(
        session,
        actor,
        action or f"reservation.{r.status}",
        "reservation",
        r.id,
        before={"status": before},
        after={"status": r.status, "start": r.start, "end": r.end, "unit_id": r.unit_id},
        reason=r.status_reason,
        **extra,
    )


def set_status(
    session: Session,
    actor: audit.Actor,
    r: Reservation,
    ctx: ResourceCtx,
    target: Status,
    reason: str | None = None,
    now: datetime | None = None,
    *,
    action: str | None = None,
    **extra: Any,
) -> None:
    """The one way a status changes: checked against the state machine, audited, announced."""
    before = transition(r, target, reason, now)
    session.add(r)
    session.flush()
    announce_status(session, actor, r, ctx, before, action=action, **extra)


def check_in_on_entry(session: Session, reservation_id: int, user_id: int, at: datetime, door: str) -> bool:
    """The first granted entry of a beneficiary inside the window checks the booking in.

    Registered with access as the entry listener for reservations (see bookgate.app). The row is
    locked so two entries read on two gateway nodes check it in once."""
    r = session.exec(select(Reservation).where(Reservation.id == reservation_id).with_for_update()).first()
    if r is None or r.status != Status.confirmed.value or not (r.access_start <= at < r.access_end):
        return False
    ctx = load_resource_by_id(session, r.resource_id)
    set_status(
        session,
        audit.SYSTEM,
        r,
        ctx,
        Status.checked_in,
        f"entered at {door}",
        at,
        action="reservation.check_in",
        user_id=user_id,
        door=door,
    )
    return True


def cancel(
    session: Session,
    principal: Principal,
    reservation_id: int,
    reason: str,
    now: datetime | None = None,
) -> Reservation:
    now = now or utcnow()
    r, ctx, privileged = get_for_change(session, principal, reservation_id)
    check_transition(r.status, Status.cancelled)
    _check_change_allowed(r, ctx, privileged, now, counts=False)
    if r.series_id is not None:
        r.detached = True
    set_status(session, principal.actor, r, ctx, Status.cancelled, reason, now)
    return r


# ---------------------------------------------------------------- list


def list_for(
    session: Session,
    principal: Principal,
    *,
    scope: str = "mine",
    resource: str | None = None,
    status: list[str] | None = None,
    start_from: datetime | None = None,
    start_to: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Reservation]:
    stmt = select(Reservation)
    if scope == "mine":
        bens = select(ReservationBeneficiary.reservation_id).where(ReservationBeneficiary.user_id == principal.user_id)
        stmt = stmt.where((Reservation.planner_id == principal.user_id) | col(Reservation.id).in_(bens))
    elif scope == "managed":
        if not principal.admin:
            venue_ids = list(principal.managed_venues)
            if not venue_ids:
                raise Forbidden("forbidden_role", "scope=managed is for venue managers")
            res_ids = (
                select(Resource.id).join(Venue, col(Venue.id) == Resource.venue_id).where(col(Venue.id).in_(venue_ids))
            )
            stmt = stmt.where(col(Reservation.resource_id).in_(res_ids))
    else:
        raise Invalid("bad_scope", "scope is mine or managed", field="scope")
    if resource:
        rid = session.exec(select(Resource.id).where(Resource.key == resource)).first()
        if rid is None:
            raise NotFound("resource_not_found", f"no resource {resource!r}", field="resource")
        stmt = stmt.where(Reservation.resource_id == rid)
    if status:
        bad = [s for s in status if s not in Status.__members__]
        if bad:
            raise Invalid("bad_status", f"unknown status {bad[0]!r}", field="status")
        stmt = stmt.where(col(Reservation.status).in_(status))
    if start_from is not None:
        stmt = stmt.where(Reservation.end > start_from)
    if start_to is not None:
        stmt = stmt.where(Reservation.start < start_to)
    return list(session.exec(stmt.order_by(Reservation.start, Reservation.id).offset(offset).limit(limit)).all())
