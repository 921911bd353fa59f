"""The waitlist: people waiting for a full slot, and the offers made to them when a place frees.

A resident joins a resource's waitlist for a window that is full now. When a place frees (a
booking cancelled, rejected, expired, released as a no-show), the first candidate in order of
joining whose window now has room gets an offer held for the venue's `hold_minutes`: accepting
books it through the normal booking path, with all its rules and quotas; declining, or letting it
lapse, passes it on to the next. A venue may instead leave the choice of whom to offer to its
managers (`mode: manual`), who see each candidate's history.

An offer holds the place against the other candidates (one open offer per window at a time) and
against direct bookings by anyone else (`bms.holds`: refused with `held_for_waitlist`); a place
that went all the same (a booking that raced the offer) makes the accept say so (`place_gone`).
Two accepts racing for one offer: the entry's row is locked, one books, the other is refused
(`offer_closed`); two offers racing for one place: the booking path's no-double-booking guarantee
lets one win.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, Field
from sqlalchemy import Column, Engine, ForeignKey, Index, Integer
from sqlmodel import Field as SQLField
from sqlmodel import Session, SQLModel, col, func, select

from bms import holds
from bms.allocation import has_room
from bms.context import ResourceCtx, load_resource, load_resource_by_id, manages, require_can_book
from bms.models import Reservation
from bms.policies import NO_POLICIES, BookingPolicies
from bms.states import Status
from core import audit, outbox
from core.auth import Principal
from core.db import UTCDateTime, ident, is_sqlite, utcnow, write_session
from core.deps import CurrentUser, SessionDep, WriteSessionDep
from core.errors import AppError, Conflict, Forbidden, NotFound
from core.models import Venue
from core.types import IsoDateTime

WAITING, OFFERED, BOOKED, DECLINED, LAPSED, LEFT = "waiting", "offered", "booked", "declined", "lapsed", "left"
OPEN = (WAITING, OFFERED)


class WaitlistPolicy(SQLModel, table=True):
    """Per venue; no row means automatic offers held 30 minutes."""

    __tablename__ = "waitlist_policy"

    venue_id: int = SQLField(sa_column=Column(Integer, ForeignKey("venue.id", ondelete="CASCADE"), primary_key=True))
    mode: str = SQLField(default="auto", max_length=10)
    hold_minutes: int = 30


class WaitlistEntry(SQLModel, table=True):
    __tablename__ = "waitlist_entry"
    __table_args__ = (Index("ix_waitlist_entry_resource_status", "resource_id", "status"),)

    id: int | None = SQLField(default=None, primary_key=True)
    resource_id: int = SQLField(
        sa_column=Column(Integer, ForeignKey("resource.id", ondelete="CASCADE"), nullable=False)
    )
    user_id: int = SQLField(
        sa_column=Column(Integer, ForeignKey("app_user.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    start: datetime = SQLField(sa_type=UTCDateTime)
    end: datetime = SQLField(sa_type=UTCDateTime)
    places: int = 1
    status: str = SQLField(default=WAITING, max_length=10)
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)
    offered_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    offer_expires_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    reservation_id: int | None = SQLField(
        default=None, sa_column=Column(Integer, ForeignKey("reservation.id", ondelete="SET NULL"), nullable=True)
    )


class WaitlistJoin(BaseModel):
    resource: str = Field(min_length=1, max_length=63)
    start: IsoDateTime
    end: IsoDateTime
    places: int = Field(default=1, ge=1, le=10_000)


class WaitlistPolicyIn(BaseModel):
    mode: Literal["auto", "manual"] = "auto"
    hold_minutes: int = Field(default=30, ge=1, le=7 * 24 * 60)


class History(BaseModel):
    active: int
    no_shows: int
    cancellations: int


class EntryPublic(BaseModel):
    id: int
    resource: str
    user_id: int
    start: datetime
    end: datetime
    places: int
    status: str
    created_at: datetime
    offer_expires_at: datetime | None
    reservation_id: int | None
    history: History | None = None


def public(e: WaitlistEntry, resource_key: str, history: History | None = None) -> EntryPublic:
    return EntryPublic(
        id=ident(e),
        resource=resource_key,
        user_id=e.user_id,
        start=e.start,
        end=e.end,
        places=e.places,
        status=e.status,
        created_at=e.created_at,
        offer_expires_at=e.offer_expires_at,
        reservation_id=e.reservation_id,
        history=history,
    )


def policy(session: Session, venue_id: int) -> WaitlistPolicy:
    return session.get(WaitlistPolicy, venue_id) or WaitlistPolicy(venue_id=venue_id)


def set_policy(session: Session, principal: Principal, venue_id: int, data: WaitlistPolicyIn) -> WaitlistPolicy:
    if not principal.manages_venue(venue_id):
        raise Forbidden("not_venue_manager", "only the venue's managers set its waitlist")
    p = session.get(WaitlistPolicy, venue_id) or WaitlistPolicy(venue_id=venue_id)
    p.mode, p.hold_minutes = data.mode, data.hold_minutes
    session.add(p)
    session.flush()
    audit.record(session, principal.actor, "waitlist.policy", "venue", venue_id, after=data.model_dump())
    return p


# ---------------------------------------------------------------- joining and leaving


def join(session: Session, principal: Principal, data: WaitlistJoin, now: datetime | None = None) -> EntryPublic:
    """Only a window that is full now, and that the caller could book were it free."""
    now = now or utcnow()
    ctx = load_resource(session, data.resource)
    require_can_book(principal, ctx)
    start, end = data.start.astimezone(now.tzinfo), data.end.astimezone(now.tzinfo)
    ctx.rules.check_times(start, end, now, privileged=manages(principal, ctx))
    if has_room(session, ctx, start, end, data.places):
        raise Conflict("slot_free", "this slot has room: book it instead")
    same = session.exec(
        select(WaitlistEntry.id).where(
            col(WaitlistEntry.resource_id) == ctx.resource.id,
            col(WaitlistEntry.user_id) == principal.user_id,
            col(WaitlistEntry.start) == start,
            col(WaitlistEntry.end) == end,
            col(WaitlistEntry.status).in_(OPEN),
        )
    ).first()
    if same is not None:
        raise Conflict("already_waiting", "you are already on this waitlist", entry_id=same)
    e = WaitlistEntry(
        resource_id=ident(ctx.resource), user_id=principal.user_id, start=start, end=end, places=data.places
    )
    session.add(e)
    session.flush()
    audit.record(session, principal.actor, "waitlist.join", "waitlist_entry", e.id, resource=ctx.resource.key)
    return public(e, ctx.resource.key)


def _locked(session: Session, entry_id: int) -> WaitlistEntry | None:
    stmt = select(WaitlistEntry).where(col(WaitlistEntry.id) == entry_id)
    if not is_sqlite(session):
        stmt = stmt.with_for_update()
    return session.exec(stmt).first()


def _own(session: Session, principal: Principal, entry_id: int) -> WaitlistEntry:
    e = _locked(session, entry_id)
    if e is None or e.user_id != principal.user_id:
        raise NotFound("waitlist_entry_not_found", f"no waitlist entry {entry_id}")
    return e


def leave(session: Session, principal: Principal, entry_id: int, now: datetime | None = None) -> EntryPublic:
    now = now or utcnow()
    e = _own(session, principal, entry_id)
    if e.status not in OPEN:
        raise Conflict("entry_closed", f"this entry is {e.status}")
    was_offered = e.status == OFFERED
    e.status = LEFT
    session.add(e)
    session.flush()
    audit.record(session, principal.actor, "waitlist.leave", "waitlist_entry", e.id)
    ctx = load_resource_by_id(session, e.resource_id)
    if was_offered:
        offer_next(session, ctx, now)
    return public(e, ctx.resource.key)


# ---------------------------------------------------------------- offers


def _open_offer_overlaps(session: Session, e: WaitlistEntry) -> bool:
    return (
        session.exec(
            select(WaitlistEntry.id).where(
                col(WaitlistEntry.resource_id) == e.resource_id,
                col(WaitlistEntry.status) == OFFERED,
                col(WaitlistEntry.start) < e.end,
                col(WaitlistEntry.end) > e.start,
                col(WaitlistEntry.id) != e.id,
            )
        ).first()
        is not None
    )


def make_offer(session: Session, actor: audit.Actor, ctx: ResourceCtx, e: WaitlistEntry, now: datetime) -> None:
    hold = timedelta(minutes=policy(session, ident(ctx.venue)).hold_minutes)
    e.status, e.offered_at, e.offer_expires_at = OFFERED, now, min(now + hold, e.start)
    session.add(e)
    session.flush()
    outbox.enqueue(
        session,
        "waitlist.offer",
        {
            "entry_id": e.id,
            "resource": ctx.resource.key,
            "venue": ctx.venue.key,
            "start": e.start.isoformat(),
            "end": e.end.isoformat(),
            "expires_at": e.offer_expires_at.isoformat() if e.offer_expires_at else None,
            "recipients": [e.user_id],
        },
    )
    audit.record(
        session, actor, "waitlist.offer", "waitlist_entry", e.id, user_id=e.user_id, expires_at=e.offer_expires_at
    )


def offer_next(session: Session, ctx: ResourceCtx, now: datetime) -> WaitlistEntry | None:
    """Offer freed room to the first waiting candidate it fits, unless the venue's managers choose."""
    if policy(session, ident(ctx.venue)).mode != "auto":
        return None
    waiting = session.exec(
        select(WaitlistEntry)
        .where(
            col(WaitlistEntry.resource_id) == ctx.resource.id,
            col(WaitlistEntry.status) == WAITING,
            col(WaitlistEntry.start) > now,
        )
        .order_by(col(WaitlistEntry.created_at), col(WaitlistEntry.id))
    ).all()
    for e in waiting:
        if _open_offer_overlaps(session, e) or not has_room(session, ctx, e.start, e.end, e.places):
            continue
        make_offer(session, audit.SYSTEM, ctx, e, now)
        return e
    return None


def place_freed(session: Session, r: Reservation, ctx: ResourceCtx, now: datetime | None = None) -> None:
    """Called in the transaction that frees a place (bms.status)."""
    offer_next(session, ctx, now or utcnow())


def offer_by_manager(session: Session, principal: Principal, entry_id: int, now: datetime | None = None) -> EntryPublic:
    now = now or utcnow()
    e = _locked(session, entry_id)
    ctx = load_resource_by_id(session, e.resource_id) if e else None
    if e is None or ctx is None or not manages(principal, ctx):
        raise NotFound("waitlist_entry_not_found", f"no waitlist entry {entry_id}")
    if e.status != WAITING:
        raise Conflict("entry_closed", f"this entry is {e.status}")
    if not has_room(session, ctx, e.start, e.end, e.places):
        raise Conflict("no_room", "this window has no room now")
    make_offer(session, principal.actor, ctx, e, now)
    return public(e, ctx.resource.key)


def accept(
    session: Session,
    principal: Principal,
    entry_id: int,
    now: datetime | None = None,
    *,
    policies: BookingPolicies = NO_POLICIES,
) -> EntryPublic:
    """Book the offered window through the normal booking path (rules, quotas, no double booking)."""
    from bms.service import ReservationCreate, create

    now = now or utcnow()
    e = _own(session, principal, entry_id)
    if e.status != OFFERED:
        raise Conflict("offer_closed", f"this entry is {e.status}, not offered")
    if e.offer_expires_at is not None and e.offer_expires_at <= now:
        raise Conflict("offer_lapsed", "this offer has lapsed")
    ctx = load_resource_by_id(session, e.resource_id)
    session.info[holds.ACCEPTING] = True  # other open offers do not hold the place against this one
    try:
        r = create(
            session,
            principal,
            ReservationCreate(resource=ctx.resource.key, start=e.start, end=e.end, places=e.places),
            now,
            policies=policies,
        )
    except AppError as exc:
        if exc.code == "slot_taken":
            raise Conflict("place_gone", "the place was taken meanwhile") from exc
        raise
    finally:
        session.info.pop(holds.ACCEPTING, None)
    e.status, e.reservation_id = BOOKED, r.id
    session.add(e)
    session.flush()
    audit.record(session, principal.actor, "waitlist.accept", "waitlist_entry", e.id, reservation_id=r.id)
    return public(e, ctx.resource.key)


def decline(session: Session, principal: Principal, entry_id: int, now: datetime | None = None) -> EntryPublic:
    now = now or utcnow()
    e = _own(session, principal, entry_id)
    if e.status != OFFERED:
        raise Conflict("offer_closed", f"this entry is {e.status}, not offered")
    e.status = DECLINED
    session.add(e)
    session.flush()
    audit.record(session, principal.actor, "waitlist.decline", "waitlist_entry", e.id)
    ctx = load_resource_by_id(session, e.resource_id)
    offer_next(session, ctx, now)
    return public(e, ctx.resource.key)


def lapse_offers(engine: Engine, now: datetime | None = None) -> int:
    """The periodic job: offers past their time lapse, and pass on to the next candidate."""
    now = now or utcnow()
    with write_session(engine) as s:
        stmt = select(WaitlistEntry).where(
            col(WaitlistEntry.status) == OFFERED, col(WaitlistEntry.offer_expires_at) <= now
        )
        if not is_sqlite(s):
            stmt = stmt.with_for_update(skip_locked=True)
        lapsed = s.exec(stmt).all()
        for e in lapsed:
            e.status = LAPSED
            s.add(e)
            s.flush()
            audit.record(s, audit.SYSTEM, "waitlist.lapse", "waitlist_entry", e.id)
        for resource_id in sorted({e.resource_id for e in lapsed}):
            offer_next(s, load_resource_by_id(s, resource_id), now)
        return len(lapsed)


# ---------------------------------------------------------------- reading


def _histories(session: Session, user_ids: set[int], now: datetime) -> dict[int, History]:
    if not user_ids:
        return {}
    rows = session.exec(
        select(Reservation.planner_id, Reservation.status, func.count())
        .where(col(Reservation.planner_id).in_(user_ids))
        .group_by(col(Reservation.planner_id), col(Reservation.status))
    ).all()
    out = {u: History(active=0, no_shows=0, cancellations=0) for u in user_ids}
    for uid, state, n in rows:
        h = out[uid]
        if state in (Status.pending.value, Status.confirmed.value, Status.checked_in.value):
            h.active += n
        elif state == Status.no_show.value:
            h.no_shows += n
        elif state == Status.cancelled.value:
            h.cancellations += n
    return out


def queue(session: Session, principal: Principal, resource_key: str, now: datetime | None = None) -> list[EntryPublic]:
    """A resource's open entries in order, with each candidate's history, for its managers."""
    ctx = load_resource(session, resource_key)
    if not manages(principal, ctx):
        raise Forbidden("not_venue_manager", "only the venue's managers see its waitlist")
    rows = session.exec(
        select(WaitlistEntry)
        .where(col(WaitlistEntry.resource_id) == ctx.resource.id, col(WaitlistEntry.status).in_(OPEN))
        .order_by(col(WaitlistEntry.created_at), col(WaitlistEntry.id))
    ).all()
    hist = _histories(session, {e.user_id for e in rows}, now or utcnow())
    return [public(e, ctx.resource.key, hist.get(e.user_id)) for e in rows]


def mine(session: Session, principal: Principal) -> list[EntryPublic]:
    rows = session.exec(
        select(WaitlistEntry)
        .where(col(WaitlistEntry.user_id) == principal.user_id)
        .order_by(col(WaitlistEntry.id).desc())
        .limit(200)
    ).all()
    keys = {e.resource_id: load_resource_by_id(session, e.resource_id).resource.key for e in rows}
    return [public(e, keys[e.resource_id]) for e in rows]


# ---------------------------------------------------------------- API


def _router() -> APIRouter:
    r = APIRouter(prefix="/api/v1/waitlist", tags=["waitlist"])

    @r.post("", response_model=EntryPublic, status_code=status.HTTP_201_CREATED)
    def join_route(data: WaitlistJoin, principal: CurrentUser, session: WriteSessionDep) -> EntryPublic:
        """Wait for a full slot; refused with `slot_free` when it has room (book it instead)."""
        return join(session, principal, data)

    @r.get("", response_model=list[EntryPublic])
    def list_route(
        principal: CurrentUser, session: SessionDep, resource: Annotated[str | None, Query(max_length=63)] = None
    ) -> list[EntryPublic]:
        """Yours; or, with `resource`, its queue in order with each candidate's history (its managers)."""
        return queue(session, principal, resource) if resource else mine(session, principal)

    @r.post("/{entry_id}/accept", response_model=EntryPublic)
    def accept_route(entry_id: int, request: Request, principal: CurrentUser, session: WriteSessionDep) -> EntryPublic:
        """Books through the normal path, with the booking policies the app was built with."""
        return accept(session, principal, entry_id, policies=request.app.state.booking_policies)

    @r.post("/{entry_id}/decline", response_model=EntryPublic)
    def decline_route(entry_id: int, principal: CurrentUser, session: WriteSessionDep) -> EntryPublic:
        return decline(session, principal, entry_id)

    @r.post("/{entry_id}/leave", response_model=EntryPublic)
    def leave_route(entry_id: int, principal: CurrentUser, session: WriteSessionDep) -> EntryPublic:
        return leave(session, principal, entry_id)

    @r.post("/{entry_id}/offer", response_model=EntryPublic)
    def offer_route(entry_id: int, principal: CurrentUser, session: WriteSessionDep) -> EntryPublic:
        """A venue manager's choice of whom to offer a place to."""
        return offer_by_manager(session, principal, entry_id)

    @r.put("/policies/{venue}", response_model=WaitlistPolicyIn)
    def policy_route(
        venue: str, data: WaitlistPolicyIn, principal: CurrentUser, session: WriteSessionDep
    ) -> WaitlistPolicyIn:
        v = session.exec(select(Venue).where(col(Venue.key) == venue)).first()
        if v is None:
            raise NotFound("venue_not_found", f"no venue {venue}")
        p = set_policy(session, principal, ident(v), data)
        return WaitlistPolicyIn(mode=p.mode, hold_minutes=p.hold_minutes)

    return r


router = _router()
