"""Residents' pages: the home page with the places they may book."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import col, select

from bms.models import Resource
from core.db import open_session
from core.deps import EngineDep
from core.models import Role, Site, Venue
from portal.layout import current, render

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def home(request: Request, engine: EngineDep) -> Response:
    principal = current(request, engine)
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    with open_session(engine) as s:
        rows = s.exec(
            select(Site, Venue, Resource)
            .join(Venue, col(Venue.site_id) == Site.id)
            .join(Resource, col(Resource.venue_id) == Venue.id)
            .where(Resource.active)
            .order_by(col(Site.key), col(Venue.key), col(Resource.key))
        ).all()
    visible_sites = principal.resident_sites | principal.reception_sites
    venues: dict[tuple[str, str], list[Resource]] = {}
    for site, venue, resource in rows:
        if principal.admin or site.id in visible_sites or venue.id in principal.managed_venues:
            venues.setdefault((site.name, venue.name), []).append(resource)
    return render(
        request,
        "home.html",
        principal,
        venues=venues,
        roles=sorted(principal.roles),
        staff=principal.has_any(Role.venue_manager, Role.reception),
    )
