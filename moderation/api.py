"""HTTP API of moderation: policies, the queue, decisions, change proposals, venue documents.

Routes parse, call one service function and shape the answer; writes run in the request's unit of
work (`WriteSessionDep`), except an upload's, which has its own (see `documents.store`).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from bms.booking import ReservationPublic, public
from core.deps import CurrentUser, EngineDep, SessionDep, WriteSessionDep
from moderation import documents, policy, service
from moderation.policy import Conditions, PolicyPublic

router = APIRouter(prefix="/api/v1", tags=["moderation"])


# ---------------------------------------------------------------- policies


@router.get("/moderation/policies/venues/{venue_key}", response_model=PolicyPublic)
def get_venue_policy(venue_key: str, principal: CurrentUser, session: SessionDep) -> PolicyPublic:
    return policy.venue_policy(session, principal, venue_key)


@router.put("/moderation/policies/venues/{venue_key}", response_model=PolicyPublic)
def put_venue_policy(
    venue_key: str, data: Conditions, principal: CurrentUser, session: WriteSessionDep
) -> PolicyPublic:
    """Conditions for the `rules` policy of every resource of the venue without its own."""
    return policy.set_venue_policy(session, principal, venue_key, data)


@router.get("/moderation/policies/{resource_key}", response_model=PolicyPublic)
def get_resource_policy(resource_key: str, principal: CurrentUser, session: SessionDep) -> PolicyPublic:
    """The conditions in force for this resource: its own, else its venue's."""
    return policy.resource_policy(session, principal, resource_key)


@router.put("/moderation/policies/{resource_key}", response_model=PolicyPublic)
def put_resource_policy(
    resource_key: str, data: Conditions, principal: CurrentUser, session: WriteSessionDep
) -> PolicyPublic:
    """This resource's own conditions, replacing its venue's as a whole."""
    return policy.set_resource_policy(session, principal, resource_key, data)


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
    return service.bulk(session, principal, data)


@router.get("/moderation/changes", response_model=list[service.ChangePublic])
def list_changes(principal: CurrentUser, session: SessionDep, venue: str | None = None) -> list[service.ChangePublic]:
    """Reschedules waiting for re-approval (venues whose policy sets reapprove_changes)."""
    return service.list_changes(session, principal, venue)


@router.post("/moderation/changes/{change_id}/approve", response_model=service.ChangePublic)
def approve_change(change_id: int, principal: CurrentUser, session: WriteSessionDep) -> service.ChangePublic:
    """A request whose booking changed meanwhile is refused (409) and stays void."""
    return service.approve_change(session, principal, change_id)


@router.post("/moderation/changes/{change_id}/reject", response_model=service.ChangePublic)
def reject_change(
    change_id: int, data: service.ChangeRejection, principal: CurrentUser, session: WriteSessionDep
) -> service.ChangePublic:
    return service.reject_change(session, principal, change_id, data)


@router.get("/moderation/{reservation_id:int}", response_model=service.QueueItem)
def get_request(reservation_id: int, principal: CurrentUser, session: SessionDep) -> service.QueueItem:
    return service.get_item(session, principal, reservation_id)


@router.post("/moderation/{reservation_id:int}/approve", response_model=ReservationPublic)
def approve(
    reservation_id: int, data: service.Decision, principal: CurrentUser, session: WriteSessionDep
) -> ReservationPublic:
    """Confirm the request; pending requests left without a place are rejected with a reason."""
    return public(session, service.approve(session, principal, reservation_id, data))


@router.post("/moderation/{reservation_id:int}/reject", response_model=ReservationPublic)
def reject(
    reservation_id: int, data: service.Rejection, principal: CurrentUser, session: WriteSessionDep
) -> ReservationPublic:
    """The reason is required and shown to the requester."""
    return public(session, service.reject(session, principal, reservation_id, data))


@router.post("/moderation/{reservation_id:int}/propose", response_model=service.ProposalPublic, status_code=201)
def propose(
    reservation_id: int, data: service.ProposalCreate, principal: CurrentUser, session: WriteSessionDep
) -> service.ProposalPublic:
    """Approve with a change: other times or unit, which the requester accepts or declines."""
    return service.proposal_public(session, service.propose(session, principal, reservation_id, data))


@router.post("/moderation/proposals/{proposal_id}/accept", response_model=ReservationPublic)
def accept_proposal(proposal_id: int, principal: CurrentUser, session: WriteSessionDep) -> ReservationPublic:
    return public(session, service.accept(session, principal, proposal_id))


@router.post("/moderation/proposals/{proposal_id}/decline", response_model=service.ProposalPublic)
def decline_proposal(proposal_id: int, principal: CurrentUser, session: WriteSessionDep) -> service.ProposalPublic:
    return service.proposal_public(session, service.decline(session, principal, proposal_id))


# ---------------------------------------------------------------- documents


async def _upload(request: Request, file: UploadFile) -> bytes:
    """At most MAX_BYTES + 1 bytes are read: enough to tell that a file is too big."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > documents.MAX_BYTES + 64 * 1024:
        raise documents.TooLarge("too_large", "documents are limited to 5 MiB", limit=documents.MAX_BYTES)
    return await file.read(documents.MAX_BYTES + 1)


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
        lambda: documents.store(
            engine,
            principal,
            venue_key,
            None,
            kind=kind,
            title=title,
            filename=file.filename or "",
            declared_type=file.content_type,
            data=data,
        )
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
        lambda: documents.store(
            engine,
            principal,
            None,
            resource_key,
            kind=kind,
            title=title,
            filename=file.filename or "",
            declared_type=file.content_type,
            data=data,
        )
    )


@router.get("/moderation/resources/{resource_key}/documents", response_model=list[documents.DocumentPublic])
def list_resource_documents(
    resource_key: str, principal: CurrentUser, session: SessionDep
) -> list[documents.DocumentPublic]:
    """What anyone who may see the resource should read: its venue's documents and its own."""
    return documents.for_resource(session, principal, resource_key)


def content_disposition(filename: str) -> str:
    """RFC 6266 with RFC 5987's ``filename*`` for names outside ASCII (HTTP headers are Latin-1):
    an ASCII fallback for old clients, the exact UTF-8 name for the rest."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


@router.get(
    "/moderation/documents/{document_id}/content",
    response_class=Response,
    responses={
        200: {
            "description": "The document's bytes, as uploaded",
            "content": {"application/pdf": {}, "image/png": {}, "image/jpeg": {}},
        }
    },
)
def document_content(document_id: int, principal: CurrentUser, session: SessionDep) -> Response:
    doc = documents.visible(session, principal, document_id)
    return Response(
        doc.data,
        media_type=doc.content_type,
        headers={
            "Content-Disposition": content_disposition(doc.filename),
            "X-Content-Type-Options": "nosniff",
            "ETag": f'"{doc.sha256}"',
        },
    )


@router.delete("/moderation/documents/{document_id}", status_code=204)
def delete_document(document_id: int, principal: CurrentUser, session: WriteSessionDep) -> Response:
    documents.remove(session, principal, document_id)
    return Response(status_code=204)
