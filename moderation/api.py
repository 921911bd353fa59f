"""HTTP API of moderation: policies, the queue, decisions, change proposals, venue documents."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel
from sqlmodel import Session, select
from starlette.concurrency import run_in_threadpool

from bms.context import ResourceCtx, can_see, load_resource, load_resource_by_id, manages
from bms.service import ReservationPublic, public
from core import audit
from core.auth import Principal
from core.db import open_session, utcnow
from core.deps import CurrentUser, EngineDep, SessionDep, WriteSessionDep
from core.errors import Forbidden, NotFound
from core.models import Venue
from moderation import documents, service
from moderation.models import ModerationPolicy, VenueDocument
from moderation.policy import Conditions, conditions_for, scope_of

router = APIRouter(prefix="/api/v1", tags=["moderation"])


# ---------------------------------------------------------------- scope helpers


def _managed_venue(session: Session, principal: Principal, key: str) -> Venue:
    """A venue the caller manages; 404 for others, so venue keys elsewhere do not leak."""
    venue = session.exec(select(Venue).where(Venue.key == key)).first()
    if venue is None or not principal.manages_venue(venue.id):  # type: ignore[arg-type]
        raise NotFound("venue_not_found", f"no venue {key!r} among yours")
    return venue


def _visible_resource(session: Session, principal: Principal, key: str) -> ResourceCtx:
    ctx = load_resource(session, key)
    if not can_see(principal, ctx):
        raise NotFound("resource_not_found", f"no resource {key!r}", field="resource")
    return ctx


def _managed_resource(session: Session, principal: Principal, key: str) -> ResourceCtx:
    ctx = _visible_resource(session, principal, key)
    if not manages(principal, ctx):
        raise Forbidden("not_a_manager", "only managers of this venue do this")
    return ctx


# ---------------------------------------------------------------- policies


class PolicyPublic(BaseModel):
    scope: str
    venue: str
    resource: str | None
    moderation: str | None = None
    conditions: Conditions
    applies: str = "new requests only; pending ones keep their state"


def _save_policy(
    session: Session, principal: Principal, venue: Venue, resource_id: int | None, cond: Conditions
) -> ModerationPolicy:
    scope = scope_of(venue.id, resource_id)  # type: ignore[arg-type]
    row = session.exec(select(ModerationPolicy).where(ModerationPolicy.scope == scope)).first()
    before = row.conditions if row else None
    row = row or ModerationPolicy(scope=scope, venue_id=venue.id, resource_id=resource_id)  # type: ignore[arg-type]
    row.conditions = cond.model_dump(mode="json", exclude_defaults=True)
    row.updated_at = utcnow()
    row.updated_by = principal.user_id
    session.add(row)
    session.flush()
    audit.record(
        session, principal.actor, "moderation.policy", "moderation_policy", scope, before=before, after=row.conditions
    )
    return row


@router.get("/moderation/policies/venues/{venue_key}", response_model=PolicyPublic)
def get_venue_policy(venue_key: str, principal: CurrentUser, session: SessionDep) -> PolicyPublic:
    venue = _managed_venue(session, principal, venue_key)
    row = session.exec(select(ModerationPolicy).where(ModerationPolicy.scope == scope_of(venue.id, None))).first()  # type: ignore[arg-type]
    cond = Conditions.model_validate(row.conditions) if row else Conditions()
    return PolicyPublic(scope="venue", venue=venue.key, resource=None, conditions=cond)


@router.put("/moderation/policies/venues/{venue_key}", response_model=PolicyPublic)
def put_venue_policy(
    venue_key: str, data: Conditions, principal: CurrentUser, session: WriteSessionDep
) -> PolicyPublic:
    """Conditions for the `rules` policy of every resource of the venue without its own."""
    venue = _managed_venue(session, principal, venue_key)
    _save_policy(session, principal, venue, None, data)
    session.commit()
    return PolicyPublic(scope="venue", venue=venue.key, resource=None, conditions=data)


@router.get("/moderation/policies/{resource_key}", response_model=PolicyPublic)
def get_resource_policy(resource_key: str, principal: CurrentUser, session: SessionDep) -> PolicyPublic:
    """The conditions in force for this resource: its own, else its venue's."""
    ctx = _managed_resource(session, principal, resource_key)
    cond, scope = conditions_for(session, ctx)
    return PolicyPublic(
        scope=scope.split(":")[0],
        venue=ctx.venue.key,
        resource=ctx.resource.key,
        moderation=ctx.rules.moderation.value,
        conditions=cond,
    )


@router.put("/moderation/policies/{resource_key}", response_model=PolicyPublic)
def put_resource_policy(
    resource_key: str, data: Conditions, principal: CurrentUser, session: WriteSessionDep
) -> PolicyPublic:
    """This resource's own conditions, replacing its venue's as a whole."""
    ctx = _managed_resource(session, principal, resource_key)
    _save_policy(session, principal, ctx.venue, ctx.resource.id, data)
    session.commit()
    return PolicyPublic(
        scope="resource",
        venue=ctx.venue.key,
        resource=ctx.resource.key,
        moderation=ctx.rules.moderation.value,
        conditions=data,
    )


# ---------------------------------------------------------------- queue and decisions


@router.get("/moderation/queue", response_model=list[service.QueueItem])
def get_queue(
    principal: CurrentUser,
    session: SessionDep,
    venue: str | None = None,
    resource: str | None = None,
    min_age_minutes: Annotated[int | None, Query(ge=0)] = None,
    requester: int | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[service.QueueItem]:
    """Pending requests of your venues, oldest first, with what a decision needs."""
    return service.queue(
        session,
        principal,
        venue=venue,
        resource=resource,
        min_age_minutes=min_age_minutes,
        requester=requester,
        limit=limit,
        offset=offset,
    )


@router.post("/moderation/decisions", response_model=list[service.BulkResult])
def decide_many(data: service.BulkDecision, principal: CurrentUser, session: WriteSessionDep) -> Any:
    """Several decisions at once; each succeeds or fails on its own."""
    results = service.bulk(session, principal, data)
    session.commit()
    return results


@router.get("/moderation/changes", response_model=list[service.ChangePublic])
def list_changes(principal: CurrentUser, session: SessionDep, venue: str | None = None) -> list[service.ChangePublic]:
    """Reschedules waiting for re-approval (venues whose policy sets reapprove_changes)."""
    return service.list_changes(session, principal, venue)


@router.post("/moderation/changes/{change_id}/approve", response_model=service.ChangePublic)
def approve_change(change_id: int, principal: CurrentUser, session: WriteSessionDep) -> service.ChangePublic:
    body = service.approve_change(session, principal, change_id)
    session.commit()
    return body


@router.post("/moderation/changes/{change_id}/reject", response_model=service.ChangePublic)
def reject_change(
    change_id: int, data: service.ChangeRejection, principal: CurrentUser, session: WriteSessionDep
) -> service.ChangePublic:
    body = service.reject_change(session, principal, change_id, data)
    session.commit()
    return body


@router.get("/moderation/{reservation_id}", response_model=service.QueueItem)
def get_request(reservation_id: int, principal: CurrentUser, session: SessionDep) -> service.QueueItem:
    return service.get_item(session, principal, reservation_id)


@router.post("/moderation/{reservation_id}/approve", response_model=ReservationPublic)
def approve(
    reservation_id: int, data: service.Decision, principal: CurrentUser, session: WriteSessionDep
) -> ReservationPublic:
    """Confirm the request; pending requests left without a place are rejected with a reason."""
    r = service.approve(session, principal, reservation_id, data)
    body = public(session, r)
    session.commit()
    return body


@router.post("/moderation/{reservation_id}/reject", response_model=ReservationPublic)
def reject(
    reservation_id: int, data: service.Rejection, principal: CurrentUser, session: WriteSessionDep
) -> ReservationPublic:
    """The reason is required and shown to the requester."""
    r = service.reject(session, principal, reservation_id, data)
    body = public(session, r)
    session.commit()
    return body


@router.post("/moderation/{reservation_id}/propose", response_model=service.ProposalPublic, status_code=201)
def propose(
    reservation_id: int, data: service.ProposalCreate, principal: CurrentUser, session: WriteSessionDep
) -> service.ProposalPublic:
    """Approve with a change: other times or unit, which the requester accepts or declines."""
    p = service.propose(session, principal, reservation_id, data)
    body = service.proposal_public(session, p)
    session.commit()
    return body


@router.post("/moderation/proposals/{proposal_id}/accept", response_model=ReservationPublic)
def accept_proposal(proposal_id: int, principal: CurrentUser, session: WriteSessionDep) -> ReservationPublic:
    r = service.accept(session, principal, proposal_id)
    body = public(session, r)
    session.commit()
    return body


@router.post("/moderation/proposals/{proposal_id}/decline", response_model=service.ProposalPublic)
def decline_proposal(proposal_id: int, principal: CurrentUser, session: WriteSessionDep) -> service.ProposalPublic:
    p = service.decline(session, principal, proposal_id)
    body = service.proposal_public(session, p)
    session.commit()
    return body


# ---------------------------------------------------------------- documents


async def _upload(request: Request, file: UploadFile) -> bytes:
    """At most MAX_BYTES + 1 bytes are read: enough to tell that a file is too big."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > documents.MAX_BYTES + 64 * 1024:
        raise documents.TooLarge("too_large", "documents are limited to 5 MiB", limit=documents.MAX_BYTES)
    return await file.read(documents.MAX_BYTES + 1)


def _doc_out(session: Session, doc: VenueDocument) -> documents.DocumentPublic:
    venue = session.get(Venue, doc.venue_id)
    res_key = load_resource_by_id(session, doc.resource_id).resource.key if doc.resource_id else None
    return documents.public(doc, venue.key, res_key)  # type: ignore[union-attr]


def _store(
    engine: Any,
    principal: Principal,
    venue_key: str | None,
    resource_key: str | None,
    kind: documents.DocumentKind,
    title: str,
    filename: str,
    declared_type: str | None,
    data: bytes,
) -> documents.DocumentPublic:
    """The database part of an upload, in a worker thread and a short write transaction of its own
    (the bytes were read first, so no write lock is held while a client sends a file)."""
    with open_session(engine, write=True) as session:
        ctx = _managed_resource(session, principal, resource_key) if resource_key else None
        venue = ctx.venue if ctx else _managed_venue(session, principal, venue_key or "")
        doc = documents.add(
            session,
            principal,
            venue,
            ctx,
            kind=kind,
            title=title,
            filename=filename,
            declared_type=declared_type,
            data=data,
        )
        session.commit()
        return documents.public(doc, venue.key, ctx.resource.key if ctx else None)


@router.post("/moderation/venues/{venue_key}/documents", response_model=documents.DocumentPublic, status_code=201)
async def add_venue_document(
    venue_key: str,
    request: Request,
    principal: CurrentUser,
    engine: EngineDep,
    file: Annotated[UploadFile, File()],
    kind: Annotated[documents.DocumentKind, Form()] = documents.DocumentKind.house_rules,
    title: Annotated[str, Form(max_length=200)] = "",
) -> documents.DocumentPublic:
    data = await _upload(request, file)
    return await run_in_threadpool(
        _store, engine, principal, venue_key, None, kind, title, file.filename or "", file.content_type, data
    )


@router.post("/moderation/resources/{resource_key}/documents", response_model=documents.DocumentPublic, status_code=201)
async def add_resource_document(
    resource_key: str,
    request: Request,
    principal: CurrentUser,
    engine: EngineDep,
    file: Annotated[UploadFile, File()],
    kind: Annotated[documents.DocumentKind, Form()] = documents.DocumentKind.house_rules,
    title: Annotated[str, Form(max_length=200)] = "",
) -> documents.DocumentPublic:
    data = await _upload(request, file)
    return await run_in_threadpool(
        _store, engine, principal, None, resource_key, kind, title, file.filename or "", file.content_type, data
    )


@router.get("/moderation/resources/{resource_key}/documents", response_model=list[documents.DocumentPublic])
def list_resource_documents(
    resource_key: str, principal: CurrentUser, session: SessionDep
) -> list[documents.DocumentPublic]:
    """What anyone who may see the resource should read: its venue's documents and its own."""
    ctx = _visible_resource(session, principal, resource_key)
    return [_doc_out(session, d) for d in documents.listing(session, ctx.venue, ctx)]


def _visible_document(session: Session, principal: Principal, document_id: int) -> VenueDocument:
    doc = session.get(VenueDocument, document_id)
    if doc is not None:
        if doc.resource_id is not None:
            ok = can_see(principal, load_resource_by_id(session, doc.resource_id))
        else:
            venue = session.get(Venue, doc.venue_id)
            ok = principal.manages_venue(doc.venue_id) or (
                venue is not None
                and (venue.site_id in principal.resident_sites or venue.site_id in principal.reception_sites)
            )
        if ok:
            return doc
    raise NotFound("document_not_found", f"no document {document_id}")


@router.get("/moderation/documents/{document_id}/content")
def document_content(document_id: int, principal: CurrentUser, session: SessionDep) -> Response:
    doc = _visible_document(session, principal, document_id)
    return Response(
        doc.data,
        media_type=doc.content_type,
        headers={
            "Content-Disposition": f'inline; filename="{doc.filename}"',
            "X-Content-Type-Options": "nosniff",
            "ETag": f'"{doc.sha256}"',
        },
    )


@router.delete("/moderation/documents/{document_id}", status_code=204)
def delete_document(document_id: int, principal: CurrentUser, session: WriteSessionDep) -> Response:
    doc = _visible_document(session, principal, document_id)
    if not principal.manages_venue(doc.venue_id):
        raise Forbidden("not_a_manager", "only managers of this venue remove its documents")
    audit.record(
        session,
        principal.actor,
        "document.delete",
        "venue_document",
        doc.id,
        before={"filename": doc.filename, "sha256": doc.sha256},
    )
    session.delete(doc)
    session.commit()
    return Response(status_code=204)
