"""Admins' webhook endpoints: the list, adding one (its signing secret shown once, on the answer
to the form, never again), deleting one. Through `notify.service`, audited there."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import col, select

from core.auth import Principal
from core.db import open_session, write_session
from core.deps import EngineDep, SettingsDep
from core.errors import AppError
from core.i18n import N_
from core.models import Role, Site
from notify import service as notify_service
from notify.messages import EVENT_KINDS
from portal.layout import NAV, NavItem, check_origin, render, require_page

router = APIRouter(include_in_schema=False)
NAV.append(NavItem("/admin/webhooks", N_("Webhooks"), (Role.admin.value,)))

DONE = {"deleted": N_("Endpoint deleted.")}


def _page(request: Request, engine: EngineDep, me: Principal, status: int = 200, **extra: object) -> Response:
    with open_session(engine) as s:
        endpoints = notify_service.list_webhooks(s)
        sites = list(s.exec(select(Site.key).order_by(col(Site.key))).all())
    notice = DONE.get(request.query_params.get("done", ""))
    ctx = {"created": None, "error": None, "form": {}, **extra}
    return render(
        request,
        "admin_webhooks.html",
        me,
        status=status,
        endpoints=endpoints,
        sites=sites,
        kinds=EVENT_KINDS,
        notice=notice,
        **ctx,
    )


@router.get("/admin/webhooks", response_class=HTMLResponse)
def webhooks_page(request: Request, engine: EngineDep) -> Response:
    me = require_page(request, engine, Role.admin)
    if not isinstance(me, Principal):
        return me
    return _page(request, engine, me)


@router.post("/admin/webhooks", response_class=HTMLResponse)
def add_webhook(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    site: Annotated[str, Form(max_length=63)],
    url: Annotated[str, Form(max_length=2000)],
    description: Annotated[str, Form(max_length=200)] = "",
    events: Annotated[list[str] | None, Form()] = None,
) -> Response:
    check_origin(request)
    me = require_page(request, engine, Role.admin)
    if not isinstance(me, Principal):
        return me
    form = {"site": site, "url": url, "description": description, "events": events or []}
    try:
        data = notify_service.WebhookCreate(site=site, url=url, description=description, events=events or [])
        with write_session(engine) as s:
            created = notify_service.create_webhook(s, settings, me.actor, data)
    except ValidationError:
        return _page(request, engine, me, 422, error=N_("Give an http:// or https:// URL with a host."), form=form)
    except AppError:
        return _page(request, engine, me, 404, error=N_("No such site."), form=form)
    return _page(request, engine, me, 201, created=created)


@router.post("/admin/webhooks/{endpoint_id}/delete")
def remove_webhook(endpoint_id: int, request: Request, engine: EngineDep) -> Response:
    check_origin(request)
    me = require_page(request, engine, Role.admin)
    if not isinstance(me, Principal):
        return me
    try:
        with write_session(engine) as s:
            notify_service.delete_webhook(s, me.actor, endpoint_id)
    except AppError:
        pass  # already gone: the list says so
    return RedirectResponse("/admin/webhooks?done=deleted", status_code=303)
