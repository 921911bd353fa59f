"""HTTP API of visitors: invitations and their QR codes, the desk, the on-site list and its live
stream, the evacuation roll call, the deny list, policies and retention."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status
from sse_starlette.sse import EventSourceResponse

from core.db import open_session, utcnow
from core.deps import AdminUser, CurrentUser, EngineDep, SessionDep, WriteSessionDep
from core.errors import Forbidden, NotFound
from core.types import IsoDate
from vms import qr, schemas, service
from vms.events import VisitFeed

router = APIRouter(prefix="/api/v1/visits", tags=["visits"])

VisitId = Annotated[int, Path(ge=1, le=2**31 - 1)]
SiteKey = Annotated[str, Query(min_length=1, max_length=63)]


def _one(session: Any, visit: Any) -> schemas.VisitPublic:
    return service.public(session, [visit])[0]


@router.post("", response_model=list[schemas.VisitPublic], status_code=status.HTTP_201_CREATED)
def invite(data: schemas.InviteIn, principal: CurrentUser, session: WriteSessionDep) -> list[schemas.VisitPublic]:
    """A host pre-registers visitors (several for one event, or one on a bounded weekly series);
    each visit gets its own code, drawn at `qr_svg` / `qr_png`, and an invitation message."""
    made = service.invite(session, principal, data)
    return service.public(session, [v for v, _ in made])


@router.get("", response_model=list[schemas.VisitPublic])
def list_visits(
    principal: CurrentUser,
    session: SessionDep,
    site: Annotated[str | None, Query(max_length=63)] = None,
    day: Annotated[IsoDate | None, Query(description="local day at the site")] = None,
    status_: Annotated[str | None, Query(alias="status", max_length=12)] = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[schemas.VisitPublic]:
    rows = service.list_visits(session, principal, site_key=site, day=day, status=status_, q=q, limit=limit)
    return service.public(session, rows)


@router.get("/on-site", response_model=list[schemas.VisitPublic])
def on_site(site: SiteKey, principal: CurrentUser, session: SessionDep) -> list[schemas.VisitPublic]:
    return service.public(session, service.on_site(session, principal, service.site_by_key(session, site)))


@router.get("/stream", response_class=EventSourceResponse)
async def stream(request: Request, principal: CurrentUser, engine: EngineDep, site: SiteKey) -> EventSourceResponse:
    """Server-sent events: `arrival`, `departure` and `held`, as they are committed on any node."""
    with open_session(engine) as s:
        row = service.site_by_key(s, site)
    if not principal.at_reception(row.id or 0):
        raise Forbidden("not_reception", "the live board is the reception's")
    feed: VisitFeed = request.app.state.visit_feed

    async def events() -> AsyncIterator[dict[str, Any]]:
        async for event in feed.subscribe(frozenset({row.id or 0})):
            yield {"event": event["kind"], "id": str(event["id"]), "data": event["json"]}

    return EventSourceResponse(events(), ping=int(max(1, feed.ping)), headers={"Cache-Control": "no-store"})


@router.get("/roll-call", response_model=schemas.RollCall)
def roll_call(site: SiteKey, principal: CurrentUser, session: SessionDep) -> dict[str, Any]:
    return service.roll_call(session, principal, service.site_by_key(session, site))


@router.post("/check-in", response_model=schemas.VisitPublic)
def check_in_by_token(data: schemas.CheckInIn, principal: CurrentUser, session: WriteSessionDep) -> schemas.VisitPublic:
    """The desk's scan: `status` is `checked_in`, or `held` when the deny list matched (a decision
    is then needed). A refused code answers 4xx with a reason the receptionist can act on."""
    return _one(session, service.check_in_by_token(session, principal, data.token, data.site))


@router.post("/walk-in", response_model=schemas.VisitPublic, status_code=status.HTTP_201_CREATED)
def walk_in(data: schemas.WalkInIn, principal: CurrentUser, session: WriteSessionDep) -> schemas.VisitPublic:
    visit, _token = service.walk_in(session, principal, data)
    return _one(session, visit)


@router.get("/deny-list", response_model=list[schemas.DenyPublic])
def deny_list(site: SiteKey, principal: CurrentUser, session: SessionDep) -> list[schemas.DenyPublic]:
    s = service.site_by_key(session, site)
    return [
        schemas.DenyPublic(
            id=e.id or 0, site=s.key, name=e.name_norm, email=e.email_norm, phone=e.phone_norm, reason=e.reason
        )
        for e in service.list_deny(session, principal, s)
    ]


@router.post("/deny-list", response_model=schemas.DenyPublic, status_code=status.HTTP_201_CREATED)
def add_deny(data: schemas.DenyIn, principal: CurrentUser, session: WriteSessionDep) -> schemas.DenyPublic:
    e = service.add_deny(session, principal, data)
    return schemas.DenyPublic(
        id=e.id or 0, site=data.site, name=e.name_norm, email=e.email_norm, phone=e.phone_norm, reason=e.reason
    )


@router.delete("/deny-list/{entry_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_deny(entry_id: VisitId, principal: CurrentUser, session: WriteSessionDep) -> Response:
    service.remove_deny(session, principal, entry_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/policy/{site}", response_model=schemas.PolicyIn)
def set_policy(
    site: Annotated[str, Path(max_length=63)], data: schemas.PolicyIn, principal: AdminUser, session: WriteSessionDep
) -> schemas.PolicyIn:
    row = service.set_policy(session, principal, site, data)
    return schemas.PolicyIn.model_validate(row, from_attributes=True)


@router.post("/purge", response_model=schemas.PurgeResult)
def purge(
    principal: AdminUser, session: WriteSessionDep, dry_run: Annotated[bool, Query()] = True
) -> schemas.PurgeResult:
    """Retention: empty the personal data of visitors past their site's retention period."""
    items = service.purge(session, utcnow(), dry_run=dry_run, actor=principal.actor)
    return schemas.PurgeResult(dry_run=dry_run, purged=[schemas.PurgeItem(**i) for i in items])


@router.get("/{visit_id}", response_model=schemas.VisitPublic)
def get_visit(visit_id: VisitId, principal: CurrentUser, session: SessionDep) -> schemas.VisitPublic:
    return _one(session, service.get_visit(session, principal, visit_id))


def _token(session: Any, principal: Any, visit_id: int) -> str:
    visit = service.get_visit(session, principal, visit_id)
    token = service.visit_token(visit)
    if token is None:
        raise NotFound("no_code", "this visit has no live code (it is over or was cancelled)")
    return token


_NO_STORE = {"Cache-Control": "no-store"}


@router.get("/{visit_id}/qr.svg", response_class=Response, responses={200: {"content": {"image/svg+xml": {}}}})
def qr_svg(visit_id: VisitId, principal: CurrentUser, session: SessionDep) -> Response:
    return Response(qr.svg(_token(session, principal, visit_id)), media_type="image/svg+xml", headers=_NO_STORE)


@router.get("/{visit_id}/qr.png", response_class=Response, responses={200: {"content": {"image/png": {}}}})
def qr_png(visit_id: VisitId, principal: CurrentUser, session: SessionDep) -> Response:
    return Response(qr.png(_token(session, principal, visit_id)), media_type="image/png", headers=_NO_STORE)


@router.post("/{visit_id}/check-in", response_model=schemas.VisitPublic)
def check_in(visit_id: VisitId, principal: CurrentUser, session: WriteSessionDep) -> schemas.VisitPublic:
    return _one(session, service.check_in(session, principal, visit_id))


@router.post("/{visit_id}/check-out", response_model=schemas.VisitPublic)
def check_out(visit_id: VisitId, principal: CurrentUser, session: WriteSessionDep) -> schemas.VisitPublic:
    return _one(session, service.desk_check_out(session, principal, visit_id))


@router.post("/{visit_id}/cancel", response_model=schemas.VisitPublic)
def cancel(visit_id: VisitId, principal: CurrentUser, session: WriteSessionDep) -> schemas.VisitPublic:
    return _one(session, service.cancel(session, principal, visit_id))


@router.post("/{visit_id}/decision", response_model=schemas.VisitPublic)
def decide(
    visit_id: VisitId, data: schemas.DecisionIn, principal: CurrentUser, session: WriteSessionDep
) -> schemas.VisitPublic:
    """Reception or an admin decides a visit the deny list held: let in, or deny."""
    return _one(session, service.decide_hold(session, principal, visit_id, data.allow, data.note))


@router.post("/{visit_id}/badge", status_code=status.HTTP_201_CREATED)
def give_badge(
    visit_id: VisitId, data: schemas.BadgeIn, principal: CurrentUser, session: WriteSessionDep
) -> dict[str, Any]:
    """A day badge for the visit: it opens the visit's doors while checked in, offline too."""
    cred = service.give_badge(session, principal, visit_id, data.value)
    return {"credential_id": cred.id, "value": cred.value, "valid_until": cred.valid_until}


__all__ = ["router"]
