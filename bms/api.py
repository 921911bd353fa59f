"""HTTP API of the booking side: resources, availability, reservations, series."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, status
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from bms import availability, recurrence, service
from bms.context import ResourceCtx, can_see, load_many, load_resource, load_resource_by_id, manages
from bms.models import IdempotencyRecord, Resource
from bms.service import ReservationCreate, ReservationPublic
from config.site import Rules, merge_rules
from core import audit
from core.auth import Principal
from core.db import open_session
from core.deps import CurrentUser, EngineDep, SessionDep, WriteSessionDep
from core.errors import AppError, Forbidden, Invalid, NotFound
from core.models import Venue

router = APIRouter(prefix="/api/v1", tags=["reservations"])


# ---------------------------------------------------------------- resources


class ResourcePublic(BaseModel):
    key: str
    name: str
    kind: str
    venue: str
    site: str
    timezone: str
    capacity: int
    units: list[str]
    pool_strategy: str | None
    quota_group: str | None
    rules: dict[str, Any]
    access: dict[str, Any]


def _resource_public(ctx: ResourceCtx) -> ResourcePublic:
    effective = merge_rules(ctx.site.defaults, ctx.venue.rules, ctx.resource.rules)
    return ResourcePublic(
        key=ctx.resource.key,
        name=ctx.resource.name,
        kind=ctx.resource.kind,
        venue=ctx.venue.key,
        site=ctx.site.key,
        timezone=ctx.site.timezone,
        capacity=ctx.resource.capacity,
        units=[u.key for u in ctx.units],
        pool_strategy=ctx.resource.pool_strategy,
        quota_group=ctx.resource.quota_group,
        rules=effective.model_dump(mode="json", exclude_none=True),
        access=ctx.resource.access,
    )


def _visible_ctx(session: Session, principal: Principal, key: str) -> ResourceCtx:
    ctx = load_resource(session, key)
    if not can_see(principal, ctx):
        raise NotFound("resource_not_found", f"no resource {key!r}", field="resource")
    return ctx


@router.get("/resources", response_model=list[ResourcePublic], tags=["resources"])
def list_resources(principal: CurrentUser, session: SessionDep, venue: str | None = None) -> list[ResourcePublic]:
    stmt = select(Resource).where(Resource.active).order_by(Resource.key)
    if venue:
        stmt = stmt.join(Venue, Venue.id == Resource.venue_id).where(Venue.key == venue)
    ctxs = load_many(session, list(session.exec(stmt).all()))
    return [_resource_public(c) for c in ctxs if can_see(principal, c)]


@router.get("/resources/{key}", response_model=ResourcePublic, tags=["resources"])
def get_resource(key: str, principal: CurrentUser, session: SessionDep) -> ResourcePublic:
    return _resource_public(_visible_ctx(session, principal, key))


@router.patch("/resources/{key}/rules", response_model=ResourcePublic, tags=["resources"])
def update_rules(key: str, data: Rules, principal: CurrentUser, session: WriteSessionDep) -> ResourcePublic:
    """Managers of the venue override rules of this resource; a field set to null falls back to
    the venue and site defaults. Applies to new requests and changes only."""
    ctx = _visible_ctx(session, principal, key)
    if not manages(principal, ctx):
        raise Forbidden("not_a_manager", "only managers of this venue change its rules")
    before = dict(ctx.resource.rules)
    merged = {**before, **data.model_dump(mode="json", exclude_unset=True)}
    ctx.resource.rules = {k: v for k, v in merged.items() if v is not None}
    merge_rules(ctx.site.defaults, ctx.venue.rules, ctx.resource.rules)  # still consistent as a whole
    session.add(ctx.resource)
    audit.record(
        session,
        principal.actor,
        "resource.rules",
        "resource",
        ctx.resource.key,
        before=before,
        after=ctx.resource.rules,
    )
    session.commit()
    return _resource_public(load_resource(session, key))


@router.get("/resources/{key}/availability", response_model=availability.ResourceAvailability, tags=["resources"])
def resource_availability(
    key: str,
    principal: CurrentUser,
    session: SessionDep,
    from_: Annotated[AwareDatetime, Query(alias="from")],
    to: Annotated[AwareDatetime, Query()],
) -> availability.ResourceAvailability:
    return availability.resource_availability(session, _visible_ctx(session, principal, key), from_, to)


@router.get("/venues/{key}/availability", response_model=list[availability.ResourceAvailability], tags=["resources"])
def venue_availability(
    key: str,
    principal: CurrentUser,
    session: SessionDep,
    date_: Annotated[date, Query(alias="date")],
) -> list[availability.ResourceAvailability]:
    venue = session.exec(select(Venue).where(Venue.key == key)).first()
    if venue is None:
        raise NotFound("venue_not_found", f"no venue {key!r}")
    resources = session.exec(
        select(Resource).where(Resource.venue_id == venue.id, Resource.active).order_by(Resource.key)
    ).all()
    ctxs = [c for c in load_many(session, list(resources)) if can_see(principal, c)]
    if not ctxs:
        raise NotFound("venue_not_found", f"no venue {key!r}")
    return availability.venue_availability(session, ctxs, date_)


# ---------------------------------------------------------------- reservations


def _request_hash(data: BaseModel) -> str:
    return hashlib.sha256(data.model_dump_json().encode()).hexdigest()


def _replay(engine: Any, user_id: int, key: str, digest: str) -> JSONResponse | None:
    with open_session(engine) as s:
        rec = s.exec(
            select(IdempotencyRecord).where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
        ).first()
    if rec is None or rec.status_code == 0:
        return None
    if rec.request_hash != digest:
        raise Invalid(
            "idempotency_key_reused", "this Idempotency-Key was used for a different request", field="Idempotency-Key"
        )
    return JSONResponse(rec.response, status_code=rec.status_code, headers={"Idempotent-Replayed": "true"})


@router.post("/reservations", response_model=ReservationPublic, status_code=status.HTTP_201_CREATED)
def create_reservation(
    data: ReservationCreate,
    principal: CurrentUser,
    engine: EngineDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Any:
    """Book. Times need a UTC offset. A retry with the same Idempotency-Key returns the first answer."""
    digest = _request_hash(data)
    if idempotency_key:
        replay = _replay(engine, principal.user_id, idempotency_key, digest)
        if replay is not None:
            return replay
    with open_session(engine, write=True) as session:
        record = None
        if idempotency_key:
            record = IdempotencyRecord(
                user_id=principal.user_id, key=idempotency_key, request_hash=digest, status_code=0
            )
            session.add(record)
            try:
                session.flush()
            except IntegrityError:
                session.rollback()
                return _replay(engine, principal.user_id, idempotency_key, digest) or JSONResponse(
                    {"code": "in_progress", "message": "the first request with this key is still running"},
                    status_code=409,
                )
        r = service.create(session, principal, data)
        body = service.public(session, r)
        if record is not None:
            record.status_code = 201
            record.response = body.model_dump(mode="json")
            session.add(record)
        session.commit()
    return body


@router.get("/reservations", response_model=list[ReservationPublic])
def list_reservations(
    principal: CurrentUser,
    session: SessionDep,
    scope: Annotated[str, Query(pattern="^(mine|managed)$")] = "mine",
    resource: str | None = None,
    status_: Annotated[list[str] | None, Query(alias="status")] = None,
    from_: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    to: Annotated[AwareDatetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[ReservationPublic]:
    rows = service.list_for(
        session,
        principal,
        scope=scope,
        resource=resource,
        status=status_,
        start_from=from_,
        start_to=to,
        limit=limit,
        offset=offset,
    )
    return [service.public(session, r) for r in rows]


@router.get("/reservations/{reservation_id}", response_model=ReservationPublic)
def get_reservation(reservation_id: int, principal: CurrentUser, session: SessionDep) -> ReservationPublic:
    r, ctx = service.get_visible(session, principal, reservation_id)
    return service.public(session, r, ctx)


class RescheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: AwareDatetime
    end: AwareDatetime


@router.post("/reservations/{reservation_id}/reschedule", response_model=ReservationPublic)
def reschedule(
    reservation_id: int, data: RescheduleIn, principal: CurrentUser, session: WriteSessionDep
) -> ReservationPublic:
    r = service.reschedule(session, principal, reservation_id, data.start, data.end)
    body = service.public(session, r)
    session.commit()
    return body


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=500)


@router.post("/reservations/{reservation_id}/cancel", response_model=ReservationPublic)
def cancel(reservation_id: int, data: CancelIn, principal: CurrentUser, session: WriteSessionDep) -> ReservationPublic:
    r = service.cancel(session, principal, reservation_id, data.reason or "cancelled by user")
    body = service.public(session, r)
    session.commit()
    return body


class DuplicateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dates: list[date] = Field(default_factory=list, max_length=100, description="local dates; same local times")
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


@router.post("/reservations/{reservation_id}/duplicate", response_model=DuplicateOut)
def duplicate(reservation_id: int, data: DuplicateIn, principal: CurrentUser, session: WriteSessionDep) -> DuplicateOut:
    """Copy to other local dates and/or resources; each copy is checked like a new booking."""
    original, ctx = service.get_visible(session, principal, reservation_id)
    if original.planner_id != principal.user_id and not manages(principal, ctx):
        raise Forbidden("not_the_planner", "only the planner or a manager may duplicate this")
    tz = ctx.rules.tz
    ls, le = original.start.astimezone(tz), original.end.astimezone(tz)
    dates = data.dates or [ls.date()]
    keys = data.resources or [ctx.resource.key]
    if not data.dates and not data.resources:
        raise Invalid("nothing_to_copy", "give dates and/or resources", field="dates")
    bens = list(service.public(session, original, ctx).beneficiaries)
    out = DuplicateOut(made=[], refused=[])
    for key in keys:
        for d in dates:
            # Same local wall times on the new date, whatever DST does in between.
            start = datetime.combine(d, ls.time(), tz)
            end = (start.replace(tzinfo=None) + (le.replace(tzinfo=None) - ls.replace(tzinfo=None))).replace(tzinfo=tz)
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
                    r = service.create(session, principal, req)
                out.made.append(CopyResult(date=d, resource=key, reservation=service.public(session, r)))
            except AppError as exc:
                out.refused.append(CopyResult(date=d, resource=key, code=exc.code, message=exc.message))
    session.commit()
    return out


# ---------------------------------------------------------------- series


@router.post("/series", response_model=recurrence.SeriesResult, status_code=status.HTTP_201_CREATED, tags=["series"])
def create_series(data: recurrence.SeriesCreate, principal: CurrentUser, session: WriteSessionDep) -> Any:
    result = recurrence.create_series(session, principal, data)
    session.commit()
    return result


class SeriesPublic(BaseModel):
    id: int
    resource: str
    rrule: str
    dtstart_local: str
    until_local: str | None
    duration_minutes: int
    timezone: str
    active: bool
    occurrences: list[ReservationPublic]


@router.get("/series/{series_id}", response_model=SeriesPublic, tags=["series"])
def get_series(series_id: int, principal: CurrentUser, session: SessionDep) -> SeriesPublic:
    series, rows = recurrence.get_series(session, principal, series_id)
    ctx = load_resource_by_id(session, series.resource_id)
    return SeriesPublic(
        id=series.id,
        resource=ctx.resource.key,
        rrule=series.rrule,
        dtstart_local=series.dtstart_local,  # type: ignore[arg-type]
        until_local=series.until_local,
        duration_minutes=series.duration_minutes,
        timezone=series.timezone,
        active=series.active,
        occurrences=[service.public(session, r, ctx) for r in rows],
    )


@router.patch("/series/{series_id}", response_model=recurrence.SeriesResult, tags=["series"])
def update_series(
    series_id: int, data: recurrence.SeriesUpdate, principal: CurrentUser, session: WriteSessionDep
) -> Any:
    result = recurrence.update_series(session, principal, series_id, data)
    session.commit()
    return result


@router.post("/series/{series_id}/cancel", response_model=recurrence.SeriesResult, tags=["series"])
def cancel_series(
    series_id: int, data: recurrence.SeriesCancel, principal: CurrentUser, session: WriteSessionDep
) -> Any:
    result = recurrence.cancel_series(session, principal, series_id, data)
    session.commit()
    return result
