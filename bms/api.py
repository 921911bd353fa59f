"""HTTP API of the booking side: resources, availability, reservations, series.

Routes parse, call one service function and shape the answer. Writes run in the request's unit of
work (`WriteSessionDep`: committed when the route returns, rolled back when it raises); the
booking policies the app factory built reach the services through `PoliciesDep`.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, status
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from bms import availability, doors, queries, recurrence, resources, service
from bms.context import load_resource_by_id, visible_resource
from bms.policies import NO_POLICIES, BookingPolicies
from bms.queries import ReservationPublic
from bms.resources import ResourcePublic
from bms.service import ReservationCreate
from config.site import Rules
from core.db import read_session
from core.deps import CurrentUser, EngineDep, SessionDep, WriteSessionDep, get_engine, run_unit
from core.types import IsoDateTime

router = APIRouter(prefix="/api/v1", tags=["reservations"])


async def get_booking_policies(request: Request) -> BookingPolicies:
    """The policies the app factory put on `app.state.booking_policies`; none on an app without."""
    return getattr(request.app.state, "booking_policies", NO_POLICIES)


PoliciesDep = Annotated[BookingPolicies, Depends(get_booking_policies)]


# ---------------------------------------------------------------- resources


@router.get("/resources", response_model=list[ResourcePublic], tags=["resources"])
def list_resources(principal: CurrentUser, session: SessionDep, venue: str | None = None) -> list[ResourcePublic]:
    return resources.listing(session, principal, venue)


@router.get("/resources/{key}", response_model=ResourcePublic, tags=["resources"])
def get_resource(key: str, principal: CurrentUser, session: SessionDep) -> ResourcePublic:
    return resources.public(visible_resource(session, principal, key))


@router.patch("/resources/{key}/rules", response_model=ResourcePublic, tags=["resources"])
def update_rules(key: str, data: Rules, principal: CurrentUser, session: WriteSessionDep) -> ResourcePublic:
    """Managers of the venue override rules of this resource; a field set to null falls back to
    the venue and site defaults. Applies to new requests and changes only."""
    return resources.update_rules(session, principal, key, data)


@router.get("/resources/{key}/availability", response_model=availability.ResourceAvailability, tags=["resources"])
def resource_availability(
    key: str,
    principal: CurrentUser,
    session: SessionDep,
    from_: Annotated[IsoDateTime, Query(alias="from")],
    to: Annotated[IsoDateTime, Query()],
) -> availability.ResourceAvailability:
    ctx = availability.visible_resource(session, principal, key)  # cached until a rule edit or import
    return availability.resource_availability(session, ctx, from_, to)


@router.get(
    "/venues/{key}/availability",
    response_model=list[availability.ResourceAvailability] | list[availability.ResourceDay],
    tags=["resources"],
)
def venue_availability(
    key: str,
    principal: CurrentUser,
    session: SessionDep,
    date_: Annotated[date, Query(alias="date")],
    format_: Annotated[Literal["full", "compact"], Query(alias="format")] = "full",
) -> Response:
    """One local day of the venue's resources. `format=full` (the default): one object per slot;
    `format=compact`: runs of consecutive slots of equal status, availability and pending count."""
    day = availability.venue_day(session, availability.venue_contexts(session, principal, key), date_)
    body = day.compact_json() if format_ == "compact" else day.full_json()
    return Response(body, media_type="application/json")


# ---------------------------------------------------------------- reservations


@router.post("/reservations", response_model=ReservationPublic, status_code=status.HTTP_201_CREATED)
async def create_reservation(
    data: ReservationCreate,
    principal: CurrentUser,
    engine: EngineDep,
    policies: PoliciesDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Any:
    """Book. Times need a UTC offset. A retry with the same Idempotency-Key returns the first answer."""
    out = await run_unit(
        engine, lambda session: service.create_once(session, principal, data, idempotency_key, policies=policies)
    )
    if isinstance(out, service.Replay):
        return JSONResponse(out.body, status_code=out.status_code, headers={"Idempotent-Replayed": "true"})
    return out


@router.get("/reservations", response_model=list[ReservationPublic])
def list_reservations(
    principal: CurrentUser,
    session: SessionDep,
    scope: Annotated[str, Query(pattern="^(mine|managed)$")] = "mine",
    resource: str | None = None,
    status_: Annotated[list[str] | None, Query(alias="status")] = None,
    from_: Annotated[IsoDateTime | None, Query(alias="from")] = None,
    to: Annotated[IsoDateTime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[ReservationPublic]:
    rows = queries.list_for(
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
    return queries.public_many(session, rows)


@router.get("/reservations/{reservation_id}", response_model=ReservationPublic)
def get_reservation(reservation_id: int, principal: CurrentUser, session: SessionDep) -> ReservationPublic:
    r, ctx = queries.get_visible(session, principal, reservation_id)
    return queries.public(session, r, ctx)


class RescheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: IsoDateTime
    end: IsoDateTime


@router.post("/reservations/{reservation_id}/reschedule", response_model=ReservationPublic)
def reschedule(
    reservation_id: int, data: RescheduleIn, principal: CurrentUser, session: WriteSessionDep, policies: PoliciesDep
) -> ReservationPublic:
    r = service.reschedule(session, principal, reservation_id, data.start, data.end, policies=policies)
    return queries.public(session, r)


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=500)


@router.post("/reservations/{reservation_id}/cancel", response_model=ReservationPublic)
def cancel(reservation_id: int, data: CancelIn, principal: CurrentUser, session: WriteSessionDep) -> ReservationPublic:
    r = service.cancel(session, principal, reservation_id, data.reason or "cancelled by user")
    return queries.public(session, r)


@router.get("/reservations/{reservation_id}/doors", response_model=doors.ExtraDoorsOut)
def get_extra_doors(reservation_id: int, principal: CurrentUser, session: SessionDep) -> doors.ExtraDoorsOut:
    """The doors a manager added to this booking, beyond its resource's doors."""
    return doors.get_extra_doors(session, principal, reservation_id)


@router.put("/reservations/{reservation_id}/doors", response_model=doors.ExtraDoorsOut)
def set_extra_doors(
    reservation_id: int, data: doors.ExtraDoorsIn, principal: CurrentUser, session: WriteSessionDep
) -> doors.ExtraDoorsOut:
    """Managers of the venue: open more doors of the site for this booking (or every coming
    occurrence of its series) during its access window; they follow its moves and cancellation."""
    return doors.set_extra_doors(session, principal, reservation_id, data)


@router.post("/reservations/{reservation_id}/duplicate", response_model=service.DuplicateOut)
def duplicate(
    reservation_id: int,
    data: service.DuplicateIn,
    principal: CurrentUser,
    session: WriteSessionDep,
    policies: PoliciesDep,
) -> service.DuplicateOut:
    """Copy to other local dates and/or resources; each copy is checked like a new booking."""
    return service.duplicate(session, principal, reservation_id, data, policies=policies)


# ---------------------------------------------------------------- series


def preflight_series(
    data: recurrence.SeriesCreate, principal: CurrentUser, engine: Annotated[Engine, Depends(get_engine)]
) -> recurrence.Expanded | None:
    """The rule expanded on a short read session: a dependency declared before the unit of work,
    so FastAPI runs it before the write admission is taken."""
    with read_session(engine) as session:
        return recurrence.preflight(session, principal, data)


@router.post("/series", response_model=recurrence.SeriesResult, status_code=status.HTTP_201_CREATED, tags=["series"])
def create_series(
    data: recurrence.SeriesCreate,
    principal: CurrentUser,
    expanded: Annotated[recurrence.Expanded | None, Depends(preflight_series)],
    session: WriteSessionDep,
    policies: PoliciesDep,
) -> Any:
    return recurrence.create_series(session, principal, data, policies=policies, expanded=expanded)


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
        dtstart_local=series.dtstart_local,
        until_local=series.until_local,
        duration_minutes=series.duration_minutes,
        timezone=series.timezone,
        active=series.active,
        occurrences=queries.public_many(session, rows, ctx=ctx),
    )


@router.patch("/series/{series_id}", response_model=recurrence.SeriesResult, tags=["series"])
def update_series(
    series_id: int,
    data: recurrence.SeriesUpdate,
    principal: CurrentUser,
    session: WriteSessionDep,
    policies: PoliciesDep,
) -> Any:
    return recurrence.update_series(session, principal, series_id, data, policies=policies)


@router.post("/series/{series_id}/cancel", response_model=recurrence.SeriesResult, tags=["series"])
def cancel_series(
    series_id: int, data: recurrence.SeriesCancel, principal: CurrentUser, session: WriteSessionDep
) -> Any:
    return recurrence.cancel_series(session, principal, series_id, data)
