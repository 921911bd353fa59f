"""Every reservation write, orchestrated in the caller's one transaction: create (at most once per
Idempotency-Key), reschedule, cancel, duplicate. Rules and quotas first, then placement on a unit
(`bms.allocation`, which holds the no-double-booking guarantee), then the access window, the
outbox message and the audit row. Services flush; the unit of work commits.

The split: `bms.allocation` places a booking, `bms.quotas` counts what a person holds,
`bms.status` changes statuses, `bms.queries` reads and shapes, `bms.policies` holds the extension
points. Layers above bms use `bms.booking`, its public surface. The names re-exported below keep
this module's former callers working.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import insert as sql_insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bms.allocation import peak_places, place
from bms.context import ResourceCtx, load_resource, load_resource_by_id, manages, require_can_book
from bms.models import LONG_SPAN, IdempotencyRecord, Reservation, ReservationBeneficiary, ReservationChange
from bms.policies import NO_POLICIES, BookingPolicies
from bms.queries import PendingChange, ReservationPublic, get_visible, list_for, pending_change, public, public_many
from bms.queries import _shape as shape_reservation  # bms-internal: one reservation shaped from known parts
from bms.quotas import check_quotas, counts_planner_alone, lock_planner
from bms.states import Status, check_transition
from bms.status import check_in_on_entry, decide_status, event_payload, set_status, sync_access
from core import audit, outbox
from core.auth import Principal
from core.db import ident, is_sqlite, utcnow
from core.errors import AppError, Conflict, Forbidden, Invalid
from core.models import Role, RoleGrant, User
from core.types import IsoDate, IsoDateTime

# The orchestration below, and (re-exported for former callers of bms.service) BookingPolicies,
# NO_POLICIES, PendingChange, ReservationPublic, check_in_on_entry, check_quotas, get_visible,
# list_for, peak_places, pending_change, public, public_many, set_status.
__all__ = [
    "NO_POLICIES",
    "BookingPolicies",
    "CopyResult",
    "Draft",
    "DuplicateIn",
    "DuplicateOut",
    "PendingChange",
    "Replay",
    "ReservationCreate",
    "ReservationPublic",
    "apply_change",
    "cancel",
    "check_in_on_entry",
    "check_quotas",
    "create",
    "create_once",
    "duplicate",
    "get_for_change",
    "get_visible",
    "insert",
    "list_for",
    "move",
    "peak_places",
    "pending_change",
    "prepare",
    "public",
    "public_many",
    "reschedule",
    "set_status",
    "set_times",
]

# ---------------------------------------------------------------- create


class ReservationCreate(BaseModel):
    """Times must carry a UTC offset (e.g. 2026-12-01T18:00:00+01:00); a naive time is refused (422)."""

    model_config = ConfigDict(extra="forbid")
    resource: str = Field(min_length=1, max_length=63)
    start: IsoDateTime
    end: IsoDateTime
    beneficiaries: list[int] = Field(default_factory=list, max_length=200)
    places: int = Field(default=1, ge=1, le=10_000)
    note: str = Field(default="", max_length=1000)


@dataclass
class Draft:
    """A validated booking request, before a unit is chosen (what the status policies judge)."""

    ctx: ResourceCtx
    planner: User
    start: datetime
    end: datetime
    beneficiaries: list[int]
    places: int
    note: str
    privileged: bool
    planner_locked: bool = False  # locked by `prepare` as the quota check would lock it


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
        # Residents of the resource's site only (whoever books, a manager or an admin too). One
        # answer for an id that does not exist and for a person of another site: no probing.
        found = set(
            session.exec(
                select(User.id)
                .join(RoleGrant, col(RoleGrant.user_id) == User.id)
                .where(
                    col(User.id).in_(unique),
                    User.is_active,
                    col(RoleGrant.role) == Role.resident.value,
                    col(RoleGrant.site_id) == ctx.site.id,
                )
            ).all()
        )
        missing = [i for i in unique if i not in found]
        if missing:
            raise Invalid(
                "unknown_beneficiary",
                f"{missing[0]} is not a resident of this site",
                field="beneficiaries",
                unknown=missing,
            )
    return unique


def prepare(session: Session, principal: Principal, data: ReservationCreate, now: datetime) -> Draft:
    """Check who books what and when; quotas and placement come at `insert`."""
    ctx = load_resource(session, data.resource)
    require_can_book(principal, ctx)
    privileged = manages(principal, ctx)
    start, end = data.start.astimezone(now.tzinfo), data.end.astimezone(now.tzinfo)
    ctx.rules.check_times(start, end, now, privileged=privileged)
    if data.places > ctx.resource.capacity:
        raise Invalid("too_many_places", f"this resource holds {ctx.resource.capacity} place(s)", field="places")
    # The planner, locked now (PostgreSQL) when the quota check would lock no one else: one query.
    locked = counts_planner_alone(ctx)
    planner = lock_planner(session, principal.user_id) if locked else session.get(User, principal.user_id)
    bens = _beneficiaries(session, data.beneficiaries, ctx)
    return Draft(ctx, planner, start, end, bens, data.places, data.note, privileged, locked)  # type: ignore[arg-type]


def insert(
    session: Session,
    principal: Principal,
    draft: Draft,
    now: datetime,
    *,
    policies: BookingPolicies = NO_POLICIES,
    series_id: int | None = None,
    occurrence_key: str | None = None,
    status: Status | None = None,
    skip_quotas: bool = False,
    refusal_rolls_back: bool = False,
) -> Reservation:
    """Write a checked draft: quotas, its status (the policies decide on `rules` resources), a unit.

    `refusal_rolls_back`: the caller rolls back (its transaction or a savepoint around this call)
    when this raises (`bms.allocation.place`)."""
    ctx = draft.ctx
    if not skip_quotas:
        locked = frozenset({ident(draft.planner)}) if draft.planner_locked else frozenset()
        check_quotas(session, ctx, draft.planner, draft.start, draft.end, now, locked=locked)
    a_start, a_end = ctx.rules.access_window(draft.start, draft.end)
    status_reason = None
    if status is None:
        status, status_reason = decide_status(session, draft, now, policies)
    r = Reservation(
        resource_id=ident(ctx.resource),
        unit_id=ident(ctx.units[0]) if ctx.units else 0,
        planner_id=ident(draft.planner),
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
    place(session, ctx, r, refusal_rolls_back=refusal_rolls_back)
    if draft.beneficiaries:
        session.execute(
            sql_insert(_BENEFICIARY), [{"reservation_id": ident(r), "user_id": uid} for uid in draft.beneficiaries]
        )
    sync_access(session, r, ctx, new_with=draft.beneficiaries)
    kind = "reservation.confirmed" if r.status == Status.confirmed else "reservation.requested"
    outbox.enqueue(session, kind, event_payload(r, ctx))
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


def create(
    session: Session,
    principal: Principal,
    data: ReservationCreate,
    now: datetime | None = None,
    *,
    policies: BookingPolicies = NO_POLICIES,
) -> Reservation:
    """Check and write a new booking. A refusal must roll back the caller's transaction, or a
    savepoint around this call (a lost race on PostgreSQL leaves the transaction failed)."""
    now = now or utcnow()
    draft = prepare(session, principal, data, now)
    # A refusal raised here ends the unit of work, or the savepoint `duplicate` opens around it.
    return insert(session, principal, draft, now, policies=policies, refusal_rolls_back=True)


_BENEFICIARY = ReservationBeneficiary.__table__  # type: ignore[attr-defined]


def _public_new(session: Session, r: Reservation, data: ReservationCreate) -> ReservationPublic:
    """A booking written just now as the API shows it (what `public` answers), from what is known:
    its context (cached by `prepare`), its beneficiaries as given, no pending change yet."""
    ctx = load_resource_by_id(session, r.resource_id)
    unit = next(u for u in ctx.units if u.id == r.unit_id)
    return shape_reservation(r, ctx, unit, sorted(set(data.beneficiaries)), None)


@dataclass
class Replay:
    """The stored answer to the first request with a given Idempotency-Key."""

    body: dict[str, Any]
    status_code: int


def request_hash(data: BaseModel) -> str:
    return hashlib.sha256(data.model_dump_json().encode()).hexdigest()


def _stored_answer(session: Session, user_id: int, key: str, digest: str) -> Replay | None:
    rec = session.exec(
        select(IdempotencyRecord).where(col(IdempotencyRecord.user_id) == user_id, col(IdempotencyRecord.key) == key)
    ).first()
    if rec is None or rec.status_code == 0:
        return None
    if rec.request_hash != digest:
        raise Invalid(
            "idempotency_key_reused", "this Idempotency-Key was used for a different request", field="Idempotency-Key"
        )
    return Replay(rec.response, rec.status_code)


def create_once(
    session: Session,
    principal: Principal,
    data: ReservationCreate,
    idempotency_key: str | None,
    *,
    policies: BookingPolicies = NO_POLICIES,
    now: datetime | None = None,
) -> ReservationPublic | Replay:
    """Book, or return the first answer given to this user's Idempotency-Key (422 if that key came
    with a different request). The key's record is written in the booking's transaction, so a
    refused booking leaves no record and may be retried with the same key."""
    if not idempotency_key:
        return _public_new(session, create(session, principal, data, now, policies=policies), data)
    digest = request_hash(data)
    stored = _stored_answer(session, principal.user_id, idempotency_key, digest)
    if stored is not None:
        return stored
    record = IdempotencyRecord(user_id=principal.user_id, key=idempotency_key, request_hash=digest, status_code=0)
    try:
        with session.begin_nested():
            session.add(record)
            session.flush()
    except IntegrityError:
        # PostgreSQL: a request with the same key committed after our look-up (SQLite's writer
        # lock rules this out). Its answer is now visible, unless it is still running.
        stored = _stored_answer(session, principal.user_id, idempotency_key, digest)
        if stored is not None:
            return stored
        raise Conflict("in_progress", "the first request with this key is still running") from None
    body = _public_new(session, create(session, principal, data, now, policies=policies), data)
    record.status_code = 201
    record.response = body.model_dump(mode="json")
    session.add(record)
    session.flush()
    return body


# ---------------------------------------------------------------- change


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
    """New times and what derives from them: the buffered block and the access window. Nothing is
    checked or written: `move` (or a confirmation, which places it) does that."""
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
    *,
    policies: BookingPolicies = NO_POLICIES,
) -> Reservation:
    """Move the booking now, or, where a change policy asks for it, record the change for a manager
    while the booking keeps its slot."""
    now = now or utcnow()
    r, ctx, privileged = get_for_change(session, principal, reservation_id)
    _check_change_allowed(r, ctx, privileged, now, counts=True)
    planner = session.get(User, r.planner_id)
    start, end = start.astimezone(now.tzinfo), end.astimezone(now.tzinfo)
    if not privileged and r.status == Status.confirmed and policies.holds_change(session, ctx, r):
        _hold_change(session, principal, ctx, r, planner, start, end, now)  # type: ignore[arg-type]
        return r
    apply_change(session, principal.actor, ctx, r, start, end, now, privileged=privileged)
    return r


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
    previous = pending_change(session, ident(r))
    if previous is not None:  # the newest request replaces an undecided one
        previous.status, previous.decided_at, previous.reason = "void", now, "replaced by a newer request"
        session.add(previous)
    change = ReservationChange(
        reservation_id=ident(r),
        requested_by=principal.user_id,
        start=start,
        end=end,
        base_version=r.updated_at,
    )
    session.add(change)
    session.flush()
    outbox.enqueue(
        session,
        "reservation.change_requested",
        {**event_payload(r, ctx), "change_id": change.id, "new_start": start.isoformat(), "new_end": end.isoformat()},
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
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    privileged: bool,
) -> None:
    """Move the booking to its new times now (a direct reschedule, or an approved change): rules
    (unless privileged), the planner's quotas, a free unit (409 slot_taken), then announced."""
    planner = session.get(User, r.planner_id)
    before = {"start": r.start, "end": r.end, "unit_id": r.unit_id}
    move(session, ctx, r, start, end, planner, now, privileged=privileged)  # type: ignore[arg-type]
    r.changes += 1
    if r.series_id is not None:
        r.detached = True
    session.add(r)
    session.flush()
    outbox.enqueue(
        session, "reservation.changed", {**event_payload(r, ctx), "before": {k: str(v) for k, v in before.items()}}
    )
    audit.record(
        session,
        actor,
        "reservation.reschedule",
        "reservation",
        r.id,
        before=before,
        after={"start": r.start, "end": r.end, "unit_id": r.unit_id},
    )


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


# ---------------------------------------------------------------- duplicate


class DuplicateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dates: list[IsoDate] = Field(default_factory=list, max_length=100, description="local dates; same local times")
    resources: list[str] = Field(default_factory=list, max_length=50, description="other resource keys")


class CopyResult(BaseModel):
    date: date
    resource: str
    reservation: ReservationPublic | None = None
    code: str | None = None
    message: str | None = None


class DuplicateOut(BaseModel):
    made: list[CopyResult]
    refused: list[CopyResult]


def duplicate(
    session: Session,
    principal: Principal,
    reservation_id: int,
    data: DuplicateIn,
    now: datetime | None = None,
    *,
    policies: BookingPolicies = NO_POLICIES,
) -> DuplicateOut:
    """Copy to other local dates and/or resources at the same local times, whatever DST does in
    between. Each copy is checked like a new booking, in its own savepoint: a refused copy is
    reported and does not undo the others."""
    now = now or utcnow()
    original, ctx = get_visible(session, principal, reservation_id)
    if original.planner_id != principal.user_id and not manages(principal, ctx):
        raise Forbidden("not_the_planner", "only the planner or a manager may duplicate this")
    if not data.dates and not data.resources:
        raise Invalid("nothing_to_copy", "give dates and/or resources", field="dates")
    tz = ctx.rules.tz
    ls, le = original.start.astimezone(tz), original.end.astimezone(tz)
    length = le.replace(tzinfo=None) - ls.replace(tzinfo=None)  # wall-clock length
    bens = sorted(
        session.exec(
            select(ReservationBeneficiary.user_id).where(col(ReservationBeneficiary.reservation_id) == original.id)
        ).all()
    )
    made: list[tuple[date, str, Reservation]] = []
    refused: list[CopyResult] = []
    for key in data.resources or [ctx.resource.key]:
        for d in data.dates or [ls.date()]:
            start = datetime.combine(d, ls.time(), tz)
            end = (start.replace(tzinfo=None) + length).replace(tzinfo=tz)
            try:
                with session.begin_nested():
                    req = ReservationCreate(
                        resource=key,
                        start=start,
                        end=end,
                        beneficiaries=bens,
                        places=original.places,
                        note=original.note,
                    )
                    made.append((d, key, create(session, principal, req, now, policies=policies)))
            except AppError as exc:
                refused.append(CopyResult(date=d, resource=key, code=exc.code, message=exc.message))
    shaped = public_many(session, [r for _, _, r in made])
    return DuplicateOut(
        made=[CopyResult(date=d, resource=key, reservation=p) for (d, key, _), p in zip(made, shaped, strict=True)],
        refused=refused,
    )
