"""Which venues and resources a caller may moderate: 404 for what they may not see, so keys of
other venues do not leak; 403 for what they see but do not manage."""

from __future__ import annotations

from sqlmodel import Session, col, select

from bms.booking import ResourceCtx, manages, visible_resource
from core.auth import Principal
from core.db import ident
from core.errors import Forbidden, NotFound
from core.models import Venue


def managed_venue(session: Session, principal: Principal, key: str) -> Venue:
    """A venue the caller manages; 404 for others."""
    venue = session.exec(select(Venue).where(col(Venue.key) == key)).first()
    if venue is None or not principal.manages_venue(ident(venue)):
        raise NotFound("venue_not_found", f"no venue {key!r} among yours")
    return venue


def managed_resource(session: Session, principal: Principal, key: str) -> ResourceCtx:
    """A resource of a venue the caller manages; 404 if they cannot see it, 403 if they only see it."""
    ctx = visible_resource(session, principal, key)
    if not manages(principal, ctx):
        raise Forbidden("not_a_manager", "only managers of this venue do this")
    return ctx
