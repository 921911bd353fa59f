"""Sites and venues (read), and the site configuration import over HTTP (admins)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlmodel import col, select
from starlette.concurrency import run_in_threadpool

from bookgate.provision import apply_site_file, parse_site
from config.site import SiteFile, SiteFileError, load_yaml
from core.audit import Actor
from core.deps import AdminUser, CurrentUser, EngineDep, SessionDep
from core.errors import Invalid
from core.models import Site, Venue

router = APIRouter(prefix="/api/v1", tags=["sites"])

MAX_SITE_FILE = 1_000_000


def _parse(raw: bytes) -> SiteFile:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SiteFileError(["(file): the body is not UTF-8 YAML or JSON"]) from None
    return parse_site(load_yaml(text))


def import_bytes(engine: Engine, raw: bytes, actor: Actor, *, source: str = "portal") -> dict[str, Any]:
    """A site file given as bytes, parsed, checked whole and applied whole (SiteFileError lists every
    problem): lent to the portal's admin page as `app.state.site_import`."""
    return apply_site_file(engine, _parse(raw), actor, source=source).as_dict()


class VenuePublic(BaseModel):
    key: str
    name: str
    names: dict[str, str] = {}  # per language, when the site file gives them


class SitePublic(BaseModel):
    key: str
    name: str
    names: dict[str, str] = {}  # per language, when the site file gives them
    timezone: str
    locale: str
    venues: list[VenuePublic]


@router.get("/sites", response_model=list[SitePublic])
def list_sites(principal: CurrentUser, session: SessionDep) -> list[SitePublic]:
    """The sites the caller belongs to (as resident, reception or manager of one of its venues)."""
    sites = session.exec(select(Site).order_by(col(Site.key))).all()
    venues = session.exec(select(Venue).order_by(col(Venue.key))).all()
    if not principal.admin:
        mine = principal.resident_sites | principal.reception_sites
        mine |= {v.site_id for v in venues if v.id in principal.managed_venues}
        sites = [s for s in sites if s.id in mine]
    return [
        SitePublic(
            key=s.key,
            name=s.name,
            names=s.names,
            timezone=s.timezone,
            locale=s.locale,
            venues=[VenuePublic(key=v.key, name=v.name, names=v.names) for v in venues if v.site_id == s.id],
        )
        for s in sites
    ]


@router.post(
    "/site-config",
    openapi_extra={"requestBody": {"content": {"application/yaml": {"schema": {"type": "string"}}}}},
)
async def import_site_config(request: Request, admin: AdminUser, engine: EngineDep) -> dict[str, Any]:
    """Import a site file (YAML or JSON body, at most 1 MB). Refused whole, with every error listed,
    or applied whole. Parsing, validation and the import run in a worker thread, never on the
    event loop, and a file may create at most `config.site.MAX_ROWS` rows."""
    raw = await request.body()
    if len(raw) > MAX_SITE_FILE:
        raise Invalid("too_large", f"site file over {MAX_SITE_FILE} bytes", status=413)
    try:
        doc = await run_in_threadpool(_parse, raw)
    except SiteFileError as exc:
        raise Invalid(
            "bad_site_file",
            f"{len(exc.errors)} error(s) in the site file",
            errors=[
                {"field": e.split(": ", 1)[0], "code": "bad_site_file", "message": e.split(": ", 1)[-1]}
                for e in exc.errors
            ],
        ) from None
    report = await run_in_threadpool(apply_site_file, engine, doc, admin.actor, source="api")
    return report.as_dict()
