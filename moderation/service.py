"""The managers' queue and their decisions, each in the caller's one write transaction.

A decision first takes the request's row lock (`FOR UPDATE` on PostgreSQL; SQLite write sessions
hold the single writer lock from BEGIN IMMEDIATE), then checks it is still pending and unchanged,
so of two managers deciding at once exactly one wins and the other gets 409. Approval goes through
bms's placement, so the no-double-booking guarantee is the same as for a direct booking.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import func
from sqlmodel import Session, col, select

from bms.booking import (
    ReservationPublic,
    ResourceCtx,
    apply_change,
    confirm,
    fits,
    load_resource_by_id,
    manages,
    public,
    public_many,
    recipients,
    set_status,
    set_times,
)
from bms.models import Reservation, ReservationBeneficiary, ReservationChange, Resource, ResourceUnit
from bms.states import ACTIVE, HOLDING, Status
from core import audit, outbox
from core.auth import Principal
from core.db import ident, is_sqlite, utcnow
from core.errors import AppError, Conflict, Forbidden, Invalid, NotFound
from core.models import User, Venue
from core.types import IsoDateTime
from moderation.models import ChangeProposal

# ---------------------------------------------------------------- schemas


class Decision(BaseModel):
    """`version` is the request's `version` as the manager saw it: a request changed since is 409."""

    model_config = ConfigDict(extra="forbid")
    note: str = Field(default="", max_length=500)
    version: IsoDateTime | None = None


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500, description="shown to the requester")
    version: IsoDateTime | None = None


class BulkItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reservation_id: int
    action: Literal["approve", "reject"]
    reason: str = Field(default="", max_length=500)
    version: IsoDateTime | None = None

    @model_validator(mode="after")
    def _reason(self) -> BulkItem:
        if self.action == "reject" and not self.reason.strip():
            raise ValueError("a rejection needs a reason")
        return self


class BulkDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decisions: list[BulkItem] = Field(min_length=1, max_length=200)


class BulkResult(BaseModel):
    reservation_id: int
    ok: bool
    status: str | None = None
    code: str | None = None
    message: str | None = None


class ProposalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: IsoDateTime
    end: IsoDateTime
    unit: str | None = Field(default=None, description="a unit key of the same resource; default: the request's")
    reason: str = Field(min_length=1, max_length=500)
    version: IsoDateTime | None = None


class ProposalPublic(BaseModel):
    id: int
    reservation_id: int
    start: datetime
    end: datetime
    unit: str | None
    reason: str
    status: str
    created_at: datetime
    decided_at: datetime | None


class History(BaseModel):
    user_id: int
    name: str
    email: str
    no_shows: int
    cancellations: int
    active_reservations: int


class HoldingConflict(BaseModel):
    reservation_id: int
    start: datetime
    end: datetime
    unit_id: int


class QueueItem(BaseModel):
    reservation: ReservationPublic
    venue: str
    version: datetime = Field(description="send back with a decision; a request changed since is refused")
    requested_at: datetime
    age_minutes: int
    expires_at: datetime
    requester: History
    beneficiaries: list[History]
    pending_conflicts: list[int] = Field(description="other pending requests for an overlapping time")
    holding_conflicts: list[HoldingConflict] = Field(description="confirmed bookings overlapping this request")
    fits: bool = Field(description="whether approving it now would find a free place")
    open_proposal: ProposalPublic | None


# ---------------------------------------------------------------- scope and loading


def require_moderator(principal: Principal) -> None:
    if not principal.admin and not principal.managed_venues:
        raise Forbidden("forbidden_role", "this needs the venue_manager role")


def _not_found(reservation_id: int) -> NotFound:
    return NotFound("request_not_found", f"no request {reservation_id} in your venues")


def load_request(
    session: Session, principal: Principal, reservation_id: int, *, lock: bool = False
) -> tuple[Reservation, ResourceCtx]:
    """A request of one of the caller's venues, or 404 whether it exists elsewhere or not at all."""
    require_moderator(principal)
    r = session.get(Reservation, reservation_id)
    if r is None:
        raise _not_found(reservation_id)
    ctx = load_resource_by_id(session, r.resource_id)
    if not manages(principal, ctx):
        raise _not_found(reservation_id)
    if lock and not is_sqlite(session):
        session.refresh(r, with_for_update=True)
    return r, ctx


def deadline(r: Reservation, ctx: ResourceCtx) -> datetime:
    """When an undecided request expires: some hours after it was made, and never after its start."""
    return min(r.created_at + ctx.rules.pending_expiry, r.start)


def _check_decidable(r: Reservation, ctx: ResourceCtx, version: datetime | None, now: datetime) -> None:
    if r.status != Status.pending:
        raise Conflict("already_decided", f"this request is no longer pending (it is {r.status})", status_now=r.status)
    if version is not None and version != r.updated_at:
        raise Conflict(
            "changed_meanwhile",
            "the request changed since you saw it; reload it",
            version=r.updated_at.isoformat(),
        )
    if now >= deadline(r, ctx):
        raise Conflict("request_expired", "this request passed its decision deadline")


# ---------------------------------------------------------------- proposals left behind


def void_proposals(session: Session, r: Reservation, now: datetime) -> None:
    for p in session.exec(
        select(ChangeProposal).where(col(ChangeProposal.reservation_id) == r.id, col(ChangeProposal.status) == "open")
    ).all():
        p.status = "void"
        p.decided_at = now
        session.add(p)


# ---------------------------------------------------------------- decisions


def overlapping_pending(session: Session, r: Reservation) -> list[Reservation]:
    return list(
        session.exec(
            select(Reservation)
            .where(
                col(Reservation.resource_id) == r.resource_id,
                col(Reservation.status) == Status.pending.value,
                col(Reservation.id) != r.id,
                col(Reservation.block_start) < r.block_end,
                col(Reservation.block_end) > r.block_start,
            )
            .order_by(col(Reservation.created_at), col(Reservation.id))
        ).all()
    )


def _confirm(
    session: Session,
    actor: audit.Actor,
    r: Reservation,
    ctx: ResourceCtx,
    reason: str,
    now: datetime,
    *,
    action: str,
    prefer_unit: int | None,
    **extra: Any,
) -> list[int]:
    """Place `r` as confirmed (409 slot_taken if it no longer fits), then reject the pending
    requests that this approval leaves without a place. Returns their ids."""
    confirm(session, actor, r, ctx, reason, now, action=f"moderation.{action}", prefer_unit=prefer_unit, **extra)
    void_proposals(session, r, now)
    losers = []
    for other in overlapping_pending(session, r):
        if fits(session, ctx, other):
            continue
        if not is_sqlite(session):
            session.refresh(other, with_for_update=True)
            if other.status != Status.pending:
                continue
        set_status(
            session,
            actor,
            other,
            ctx,
            Status.rejected,
            "the slot was given to another request",
            now,
            action="moderation.reject",
            competing_with=r.id,
        )
        void_proposals(session, other, now)
        losers.append(ident(other))
    return losers


def approve(
    session: Session, principal: Principal, reservation_id: int, data: Decision, now: datetime | None = None
) -> Reservation:
    now = now or utcnow()
    r, ctx = load_request(session, principal, reservation_id, lock=True)
    _check_decidable(r, ctx, data.version, now)
    _confirm(
        session,
        principal.actor,
        r,
        ctx,
        data.note or "approved by a manager",
        now,
        action="approve",
        prefer_unit=r.unit_id,
    )
    return r


def reject(
    session: Session, principal: Principal, reservation_id: int, data: Rejection, now: datetime | None = None
) -> Reservation:
    now = now or utcnow()
    r, ctx = load_request(session, principal, reservation_id, lock=True)
    _check_decidable(r, ctx, data.version, now)
    set_status(session, principal.actor, r, ctx, Status.rejected, data.reason.strip(), now, action="moderation.reject")
    void_proposals(session, r, now)
    return r


def bulk(session: Session, principal: Principal, data: BulkDecision, now: datetime | None = None) -> list[BulkResult]:
    """Each decision in its own savepoint: one refused decision does not undo the others."""
    now = now or utcnow()
    require_moderator(principal)
    out = []
    for item in data.decisions:
        try:
            with session.begin_nested():
                if item.action == "approve":
                    r = approve(
                        session, principal, item.reservation_id, Decision(note=item.reason, version=item.version), now
                    )
                else:
                    r = reject(
                        session,
                        principal,
                        item.reservation_id,
                        Rejection(reason=item.reason, version=item.version),
                        now,
                    )
            out.append(BulkResult(reservation_id=item.reservation_id, ok=True, status=r.status))
        except AppError as exc:
            out.append(BulkResult(reservation_id=item.reservation_id, ok=False, code=exc.code, message=exc.message))
    return out


# ---------------------------------------------------------------- approve with change


def proposal_public(session: Session, p: ChangeProposal) -> ProposalPublic:
    unit = session.get(ResourceUnit, p.unit_id) if p.unit_id is not None else None
    return ProposalPublic(
        id=p.id,
        reservation_id=p.reservation_id,
        start=p.start,
        end=p.end,
        unit=unit.key if unit else None,
        reason=p.reason,
        status=p.status,
        created_at=p.created_at,
        decided_at=p.decided_at,
    )


def propose(
    session: Session, principal: Principal, reservation_id: int, data: ProposalCreate, now: datetime | None = None
) -> ChangeProposal:
    """Offer other times or another unit; the request stays pending until the requester answers."""
    now = now or utcnow()
    r, ctx = load_request(session, principal, reservation_id, lock=True)
    _check_decidable(r, ctx, data.version, now)
    start, end = data.start.astimezone(now.tzinfo), data.end.astimezone(now.tzinfo)
    ctx.rules.check_times(start, end, now, privileged=True)
    unit_id = r.unit_id
    if data.unit is not None:
        unit = next((u for u in ctx.units if u.key == data.unit), None)
        if unit is None:
            raise Invalid("unknown_unit", f"no unit {data.unit!r} in this resource", field="unit")
        unit_id = ident(unit)
    if (start, end, unit_id) == (r.start, r.end, r.unit_id):
        raise Invalid("no_change", "the proposal is the request itself: approve it instead", field="start")
    probe = Reservation(
        id=r.id,
        resource_id=r.resource_id,
        unit_id=unit_id,
        planner_id=r.planner_id,
        start=start,
        end=end,
        block_start=start,
        block_end=end + ctx.rules.buffer,
        access_start=start,
        access_end=end,
        places=r.places,
        status=Status.pending.value,
    )
    if not fits(session, ctx, probe):
        raise Conflict("slot_taken", "the proposed time is already booked")
    void_proposals(session, r, now)
    p = ChangeProposal(
        reservation_id=ident(r),
        start=start,
        end=end,
        unit_id=unit_id,
        reason=data.reason.strip(),
        proposed_by=principal.user_id,
        based_on=r.updated_at,
        created_at=now,
    )
    session.add(p)
    session.flush()
    outbox.enqueue(
        session,
        "moderation.proposal",
        {
            "reservation_id": r.id,
            "proposal_id": p.id,
            "resource": ctx.resource.key,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "reason": p.reason,
            "recipients": [r.planner_id],
        },
    )
    audit.record(
        session,
        principal.actor,
        "moderation.propose",
        "reservation",
        r.id,
        after={"proposal_id": p.id, "start": start, "end": end, "unit_id": unit_id},
        reason=p.reason,
    )
    return p


def _load_proposal(
    session: Session, principal: Principal, proposal_id: int
) -> tuple[ChangeProposal, Reservation, ResourceCtx]:
    """Only the requester answers a proposal; to anyone else it does not exist."""
    p = session.get(ChangeProposal, proposal_id)
    r = session.get(Reservation, p.reservation_id) if p else None
    if p is None or r is None or r.planner_id != principal.user_id:
        raise NotFound("proposal_not_found", f"no proposal {proposal_id}")
    if not is_sqlite(session):
        session.refresh(r, with_for_update=True)
        session.refresh(p, with_for_update=True)
    return p, r, load_resource_by_id(session, r.resource_id)


def accept(session: Session, principal: Principal, proposal_id: int, now: datetime | None = None) -> Reservation:
    now = now or utcnow()
    p, r, ctx = _load_proposal(session, principal, proposal_id)
    if p.status != "open":
        raise Conflict("proposal_closed", f"this proposal is {p.status}")
    _check_decidable(r, ctx, p.based_on, now)
    if p.start <= now:
        raise Conflict("proposal_expired", "the proposed time has already begun")
    before = {"start": r.start, "end": r.end, "unit_id": r.unit_id}
    set_times(r, ctx, p.start, p.end, now)
    _confirm(
        session,
        principal.actor,
        r,
        ctx,
        f"approved with a change: {p.reason}",
        now,
        action="accept_proposal",
        prefer_unit=p.unit_id,
        proposal_id=p.id,
        before_times=before,
    )
    p.status = "accepted"
    p.decided_at = now
    session.add(p)
    session.flush()
    return r


def decline(session: Session, principal: Principal, proposal_id: int, now: datetime | None = None) -> ChangeProposal:
    """The request stays pending as first asked: the manager may approve, reject or propose again."""
    now = now or utcnow()
    p, r, ctx = _load_proposal(session, principal, proposal_id)
    if p.status != "open":
        raise Conflict("proposal_closed", f"this proposal is {p.status}")
    p.status = "declined"
    p.decided_at = now
    session.add(p)
    session.flush()
    outbox.enqueue(
        session,
        "moderation.proposal_declined",
        {"reservation_id": r.id, "proposal_id": p.id, "venue": ctx.venue.key, "resource": ctx.resource.key},
    )
    audit.record(session, principal.actor, "moderation.decline_proposal", "reservation", r.id, proposal_id=p.id)
    return p


# ---------------------------------------------------------------- queue


def histories(session: Session, user_ids: Iterable[int], now: datetime) -> dict[int, History]:
    """Past no-shows, cancellations and current active bookings of each user, in three queries."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    users = {u.id: u for u in session.exec(select(User).where(col(User.id).in_(ids))).all()}

    def count(*where: Any) -> dict[int, int]:
        rows = session.exec(
            select(Reservation.planner_id, func.count())
            .where(col(Reservation.planner_id).in_(ids), *where)
            .group_by(col(Reservation.planner_id))
        ).all()
        return dict(rows)

    no_shows = count(col(Reservation.status) == Status.no_show.value)
    cancels = count(col(Reservation.status) == Status.cancelled.value)
    active = count(col(Reservation.status).in_([s.value for s in ACTIVE]), col(Reservation.end) > now)
    return {
        i: History(
            user_id=i,
            name=users[i].name,
            email=users[i].email,
            no_shows=no_shows.get(i, 0),
            cancellations=cancels.get(i, 0),
            active_reservations=active.get(i, 0),
        )
        for i in ids
        if i in users
    }


def _item(
    session: Session,
    r: Reservation,
    pub: ReservationPublic,
    proposal: ChangeProposal | None,
    hist: dict[int, History],
    now: datetime,
) -> QueueItem:
    ctx = load_resource_by_id(session, r.resource_id)
    holding = session.exec(
        select(Reservation).where(
            col(Reservation.resource_id) == r.resource_id,
            col(Reservation.status).in_([s.value for s in HOLDING]),
            col(Reservation.block_start) < r.block_end,
            col(Reservation.block_end) > r.block_start,
        )
    ).all()
    return QueueItem(
        reservation=pub,
        venue=ctx.venue.key,
        version=r.updated_at,
        requested_at=r.created_at,
        age_minutes=int((now - r.created_at).total_seconds() // 60),
        expires_at=deadline(r, ctx),
        requester=hist[r.planner_id],
        beneficiaries=[hist[b] for b in pub.beneficiaries if b in hist],
        pending_conflicts=[o.id for o in overlapping_pending(session, r)],
        holding_conflicts=[
            HoldingConflict(reservation_id=h.id, start=h.start, end=h.end, unit_id=h.unit_id) for h in holding
        ],
        fits=fits(session, ctx, r),
        open_proposal=proposal_public(session, proposal) if proposal else None,
    )


def queue(
    session: Session,
    principal: Principal,
    *,
    venue: str | None = None,
    resource: str | None = None,
    min_age_minutes: int | None = None,
    requester: int | None = None,
    limit: int = 100,
    offset: int = 0,
    now: datetime | None = None,
) -> list[QueueItem]:
    """Pending requests of the caller's venues (all for admins), oldest first."""
    now = now or utcnow()
    require_moderator(principal)
    stmt = (
        select(Reservation)
        .join(Resource, col(Resource.id) == Reservation.resource_id)
        .join(Venue, col(Venue.id) == Resource.venue_id)
        .where(col(Reservation.status) == Status.pending.value)
    )
    if not principal.admin:
        stmt = stmt.where(col(Venue.id).in_(sorted(principal.managed_venues)))
    if venue is not None:
        v = session.exec(select(Venue).where(col(Venue.key) == venue)).first()
        if v is None or not principal.manages_venue(ident(v)):
            raise NotFound("venue_not_found", f"no venue {venue!r} among yours", field="venue")
        stmt = stmt.where(col(Venue.id) == v.id)
    if resource is not None:
        stmt = stmt.where(col(Resource.key) == resource)
    if min_age_minutes is not None:
        stmt = stmt.where(col(Reservation.created_at) <= now - timedelta(minutes=min_age_minutes))
    if requester is not None:
        stmt = stmt.where(col(Reservation.planner_id) == requester)
    rows = list(
        session.exec(stmt.order_by(col(Reservation.created_at), col(Reservation.id)).offset(offset).limit(limit)).all()
    )
    ids = {r.planner_id for r in rows}
    if rows:
        ids |= set(
            session.exec(
                select(ReservationBeneficiary.user_id).where(
                    col(ReservationBeneficiary.reservation_id).in_([r.id for r in rows])
                )
            ).all()
        )
    hist = histories(session, ids, now)
    pubs = public_many(session, rows)
    proposals = _open_proposals(session, [ident(r) for r in rows])
    return [_item(session, r, p, proposals.get(ident(r)), hist, now) for r, p in zip(rows, pubs, strict=True)]


def get_item(session: Session, principal: Principal, reservation_id: int, now: datetime | None = None) -> QueueItem:
    now = now or utcnow()
    r, ctx = load_request(session, principal, reservation_id)
    ids = {r.planner_id, *recipients(session, r)}
    proposal = _open_proposals(session, [reservation_id]).get(reservation_id)
    return _item(session, r, public(session, r, ctx), proposal, histories(session, ids, now), now)


def _open_proposals(session: Session, reservation_ids: list[int]) -> dict[int, ChangeProposal]:
    if not reservation_ids:
        return {}
    rows = session.exec(
        select(ChangeProposal)
        .where(col(ChangeProposal.reservation_id).in_(reservation_ids), col(ChangeProposal.status) == "open")
        .order_by(col(ChangeProposal.id))
    ).all()
    out: dict[int, ChangeProposal] = {}
    for p in rows:
        out.setdefault(p.reservation_id, p)
    return out


# ---------------------------------------------------------------- re-approval of changes


class ChangeRejection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500, description="shown to the requester")


class ChangePublic(BaseModel):
    id: int
    status: str
    start: datetime
    end: datetime
    requested_by: int
    requested_at: datetime
    reason: str | None
    reservation: ReservationPublic


def change_public(session: Session, change: ReservationChange, shown: ReservationPublic | None = None) -> ChangePublic:
    """The change request with its booking (`shown`, when the caller shaped it already)."""
    if shown is None:
        shown = public(session, session.get(Reservation, change.reservation_id))  # type: ignore[arg-type]
    return ChangePublic(
        id=change.id,
        status=change.status,
        start=change.start,
        end=change.end,
        requested_by=change.requested_by,
        requested_at=change.created_at,
        reason=change.reason,
        reservation=shown,
    )


def list_changes(session: Session, principal: Principal, venue: str | None = None) -> list[ChangePublic]:
    """Pending reschedules of the caller's venues, oldest first."""
    require_moderator(principal)
    stmt = (
        select(ReservationChange)
        .join(Reservation, col(Reservation.id) == ReservationChange.reservation_id)
        .join(Resource, col(Resource.id) == Reservation.resource_id)
        .join(Venue, col(Venue.id) == Resource.venue_id)
        .where(col(ReservationChange.status) == "pending")
        .order_by(col(ReservationChange.created_at), col(ReservationChange.id))
    )
    if not principal.admin:
        stmt = stmt.where(col(Venue.id).in_(list(principal.managed_venues)))
    if venue:
        stmt = stmt.where(col(Venue.key) == venue)
    changes = list(session.exec(stmt).all())
    ids = sorted({c.reservation_id for c in changes})
    rows = session.exec(select(Reservation).where(col(Reservation.id).in_(ids))).all() if ids else []
    shown = {p.id: p for p in public_many(session, rows)}
    return [change_public(session, c, shown[c.reservation_id]) for c in changes]


def _load_change(
    session: Session, principal: Principal, change_id: int
) -> tuple[ReservationChange, Reservation, ResourceCtx]:
    change = session.get(ReservationChange, change_id)
    if change is None:
        raise NotFound("change_not_found", f"no change request {change_id} in your venues")
    try:
        r, ctx = load_request(session, principal, change.reservation_id, lock=True)
    except NotFound:
        raise NotFound("change_not_found", f"no change request {change_id} in your venues") from None
    if not is_sqlite(session):
        session.refresh(change, with_for_update=True)
    if change.status != "pending":
        raise Conflict("already_decided", f"this change request is {change.status}", status_now=change.status)
    return change, r, ctx


def approve_change(session: Session, principal: Principal, change_id: int, now: datetime | None = None) -> ChangePublic:
    """Move the booking to the requested times (409 slot_taken if they are gone meanwhile)."""
    now = now or utcnow()
    change, r, ctx = _load_change(session, principal, change_id)
    if r.status != Status.confirmed or r.updated_at != change.base_version:
        change.status, change.decided_at, change.reason = "void", now, "the booking changed since the request"
        session.add(change)
        session.flush()
        # keep=True: the unit of work commits the void before the refusal is answered.
        raise Conflict("changed_meanwhile", "the booking changed since this request; the request is void", keep=True)
    apply_change(session, principal.actor, ctx, r, change.start, change.end, now, privileged=True)
    change.status, change.decided_at = "approved", now
    session.add(change)
    audit.record(session, principal.actor, "moderation.approve_change", "reservation", r.id, change_id=change.id)
    session.flush()
    return change_public(session, change)


def reject_change(
    session: Session, principal: Principal, change_id: int, data: ChangeRejection, now: datetime | None = None
) -> ChangePublic:
    """The booking keeps its original slot; the requester is told why."""
    now = now or utcnow()
    change, r, ctx = _load_change(session, principal, change_id)
    change.status, change.decided_at, change.reason = "rejected", now, data.reason.strip()
    session.add(change)
    session.flush()
    outbox.enqueue(
        session,
        "reservation.change_rejected",
        {
            "reservation_id": r.id,
            "resource": ctx.resource.key,
            "change_id": change.id,
            "reason": change.reason,
            "recipients": recipients(session, r),
            "decided_by": principal.actor.label,
        },
    )
    audit.record(
        session,
        principal.actor,
        "moderation.reject_change",
        "reservation",
        r.id,
        change_id=change.id,
        reason=change.reason,
    )
    return change_public(session, change)
