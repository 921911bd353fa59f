"""Venue documents (house rules, access instructions) that managers attach to a venue or resource.

The bytes are kept in the database, not under var_dir: several stateless gateway nodes share one
PostgreSQL, so a file written to one node's disk would be missing on the others, and a row is
written in the same transaction as its audit entry, so a refused or failed upload leaves nothing.
The size cap (5 MiB) keeps such rows small. The declared type, the file name's extension and the
bytes' magic number must all agree: a PNG renamed `.pdf` is refused.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from pydantic import BaseModel
from sqlalchemy import Engine
from sqlalchemy.orm import defer
from sqlmodel import Session, col, or_, select

from bms.booking import ResourceCtx, can_see, load_resource_by_id, visible_resource
from core import audit
from core.auth import Principal
from core.db import ident, write_session
from core.errors import AppError, Forbidden, Invalid, NotFound
from core.models import Venue
from moderation.models import VenueDocument
from moderation.scope import managed_resource, managed_venue

MAX_BYTES = 5 * 1024 * 1024

# content type -> (magic prefix, accepted extensions)
FORMATS: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "application/pdf": (b"%PDF-", (".pdf",)),
    "image/png": (b"\x89PNG\r\n\x1a\n", (".png",)),
    "image/jpeg": (b"\xff\xd8\xff", (".jpg", ".jpeg")),
}


class DocumentKind(StrEnum):
    house_rules = "house_rules"
    access_instructions = "access_instructions"
    other = "other"


class DocumentPublic(BaseModel):
    id: int
    venue: str
    resource: str | None
    kind: str
    title: str
    filename: str
    content_type: str
    size: int
    sha256: str
    created_at: datetime


class TooLarge(AppError):
    status = 413


class Unsupported(AppError):
    status = 415


def sniff(data: bytes) -> str | None:
    """The content type the bytes themselves announce, if it is one we accept."""
    for ctype, (magic, _) in FORMATS.items():
        if data.startswith(magic):
            return ctype
    return None


def check_upload(filename: str, declared: str | None, data: bytes) -> str:
    """The document's content type, or a refusal naming what is wrong."""
    if len(data) > MAX_BYTES:
        raise TooLarge("too_large", f"documents are limited to {MAX_BYTES // (1024 * 1024)} MiB", limit=MAX_BYTES)
    if not data:
        raise Invalid("empty_file", "the file is empty", field="file")
    declared = (declared or "").split(";")[0].strip().lower()
    if declared not in FORMATS:
        raise Unsupported("unsupported_type", "PDF, PNG or JPEG only", declared=declared or None)
    actual = sniff(data)
    if actual != declared:
        raise Unsupported(
            "type_mismatch", "the file's content does not match its declared type", declared=declared, actual=actual
        )
    if not filename.lower().endswith(FORMATS[declared][1]):
        raise Unsupported("extension_mismatch", f"a {declared} file must be named {' or '.join(FORMATS[declared][1])}")
    return declared


def _clean_name(filename: str) -> str:
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return "".join(ch for ch in name if ch.isprintable() and ch not in '"<>;')[:200] or "document"


def add(
    session: Session,
    principal: Principal,
    venue: Venue,
    ctx: ResourceCtx | None,
    *,
    kind: DocumentKind,
    title: str,
    filename: str,
    declared_type: str | None,
    data: bytes,
) -> VenueDocument:
    """Check everything before touching the session: a refusal writes nothing."""
    name = _clean_name(filename)
    ctype = check_upload(name, declared_type, data)
    doc = VenueDocument(
        venue_id=ident(venue),
        resource_id=ctx.resource.id if ctx else None,
        kind=kind.value,
        title=title.strip()[:200] or name,
        filename=name,
        content_type=ctype,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        data=data,
        uploaded_by=principal.user_id,
    )
    session.add(doc)
    session.flush()
    audit.record(
        session,
        principal.actor,
        "document.add",
        "venue_document",
        doc.id,
        after={"venue": venue.key, "resource": ctx.resource.key if ctx else None, "filename": name, "size": doc.size},
        sha256=doc.sha256,
    )
    return doc


def listing(session: Session, venue: Venue, ctx: ResourceCtx | None) -> list[VenueDocument]:
    """A venue's own documents; for a resource, its venue's and its own. The bytes stay unloaded."""
    stmt = (
        select(VenueDocument)
        .options(defer(cast(Any, VenueDocument.data)))
        .where(col(VenueDocument.venue_id) == venue.id)
    )
    if ctx is None:
        stmt = stmt.where(col(VenueDocument.resource_id).is_(None))
    else:
        stmt = stmt.where(
            or_(col(VenueDocument.resource_id).is_(None), col(VenueDocument.resource_id) == ctx.resource.id)
        )
    return list(session.exec(stmt.order_by(col(VenueDocument.id))).all())


def public(doc: VenueDocument, venue_key: str, resource_key: str | None) -> DocumentPublic:
    return DocumentPublic(
        id=doc.id,
        venue=venue_key,
        resource=resource_key,
        kind=doc.kind,
        title=doc.title,
        filename=doc.filename,
        content_type=doc.content_type,
        size=doc.size,
        sha256=doc.sha256,
        created_at=doc.created_at,
    )


def public_of(session: Session, doc: VenueDocument) -> DocumentPublic:
    venue = session.get(Venue, doc.venue_id)
    res_key = load_resource_by_id(session, doc.resource_id).resource.key if doc.resource_id else None
    return public(doc, venue.key, res_key)  # type: ignore[union-attr]


def store(
    engine: Engine,
    principal: Principal,
    venue_key: str | None,
    resource_key: str | None,
    *,
    kind: DocumentKind,
    title: str,
    filename: str,
    declared_type: str | None,
    data: bytes,
) -> DocumentPublic:
    """An upload's database part, in its own short unit of work (`write_session`) rather than the
    request's: the route reads the bytes first and calls this in a worker thread, so no write lock
    is held while a client is still sending a file."""
    with write_session(engine) as session:
        ctx = managed_resource(session, principal, resource_key) if resource_key else None
        venue = ctx.venue if ctx else managed_venue(session, principal, venue_key or "")
        doc = add(
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
        return public(doc, venue.key, ctx.resource.key if ctx else None)


def for_resource(session: Session, principal: Principal, resource_key: str) -> list[DocumentPublic]:
    """What anyone who may see the resource should read: its venue's documents and its own."""
    ctx = visible_resource(session, principal, resource_key)
    return [public_of(session, d) for d in listing(session, ctx.venue, ctx)]


def visible(session: Session, principal: Principal, document_id: int) -> VenueDocument:
    """A document the caller may read (whoever may see its resource, or its venue's site); else 404."""
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


def remove(session: Session, principal: Principal, document_id: int) -> None:
    """Managers of the venue remove its documents; audited with the removed file's digest."""
    doc = visible(session, principal, document_id)
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
    session.flush()
