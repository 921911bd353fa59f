"""Admins' view of messages: the demo mail catcher's inbox (what `make run` sent) and the parked
messages that failed too often, with a button to send each again."""

from __future__ import annotations

import email
import email.policy
import mailbox
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from core.auth import Principal
from core.db import open_session, write_session
from core.deps import EngineDep, SettingsDep
from core.errors import AppError, NotFound
from core.i18n import N_
from core.models import Role
from notify import service as notify_service
from portal.layout import NAV, NavItem, check_origin, render, require_page

router = APIRouter(include_in_schema=False)
NAV.append(NavItem("/admin/mailbox", N_("Mailbox"), (Role.admin.value,)))
NAV.append(NavItem("/admin/outbox", N_("Parked messages"), (Role.admin.value,)))

LIMIT = 200
# A caught message's HTML is shown as a document of its own: no script, no network, no form, sandboxed.
HTML_PART_POLICY = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"


@dataclass(frozen=True)
class Caught:
    key: str
    to: str
    subject: str
    date: str
    message: EmailMessage


def _box(path: str) -> mailbox.Maildir | None:
    if not path or not Path(path).is_dir():
        return None
    return mailbox.Maildir(path, factory=None, create=False)


def _parse(key: str, raw: bytes) -> Caught:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    try:
        when = parsedate_to_datetime(str(msg["Date"])).strftime("%Y-%m-%d %H:%M:%S %Z")
    except (TypeError, ValueError):
        when = ""
    return Caught(key, str(msg["To"] or ""), str(msg["Subject"] or ""), when, msg)


def caught(path: str) -> list[Caught]:
    """The newest messages first."""
    box = _box(path)
    if box is None:
        return []
    items = []
    for key in box.keys():
        try:
            items.append((box.get_file(key).read(), key))
        except (KeyError, OSError):
            continue  # delivered and moved meanwhile
    parsed = [_parse(key, raw) for raw, key in items]
    parsed.sort(key=lambda c: (c.date, c.key), reverse=True)
    return parsed[:LIMIT]


def one(path: str, key: str) -> Caught:
    box = _box(path)
    if box is None or "/" in key or key.startswith("."):
        raise NotFound("message_not_found", "no such message")
    try:
        raw = box.get_file(key).read()
    except (KeyError, OSError):
        raise NotFound("message_not_found", "no such message") from None
    return _parse(key, raw)


def _part(msg: EmailMessage, kind: str) -> str:
    body = msg.get_body(preferencelist=(kind,))
    return body.get_content() if body is not None else ""


@router.get("/admin/mailbox", response_class=HTMLResponse)
def mailbox_page(request: Request, engine: EngineDep, settings: SettingsDep) -> Response:
    me = require_page(request, engine, Role.admin)
    if not isinstance(me, Principal):
        return me
    return render(
        request,
        "mailbox.html",
        me,
        configured=bool(settings.mail_catcher_dir),
        messages=caught(settings.mail_catcher_dir),
    )


@router.get("/admin/mailbox/{key}", response_class=HTMLResponse)
def mailbox_message(key: str, request: Request, engine: EngineDep, settings: SettingsDep) -> Response:
    me = require_page(request, engine, Role.admin)
    if not isinstance(me, Principal):
        return me
    try:
        c = one(settings.mail_catcher_dir, key)
    except AppError:
        return render(request, "mailbox_message.html", me, status=404, message=None)
    attachments = [(p.get_filename() or "", p.get_content_type()) for p in c.message.iter_attachments()]
    return render(
        request,
        "mailbox_message.html",
        me,
        message=c,
        sender=str(c.message["From"] or ""),
        message_id=str(c.message["Message-ID"] or ""),
        text=_part(c.message, "plain"),
        has_html=bool(_part(c.message, "html")),
        attachments=attachments,
    )


@router.get("/admin/mailbox/{key}/html")
def mailbox_html(key: str, request: Request, engine: EngineDep, settings: SettingsDep) -> Response:
    me = require_page(request, engine, Role.admin)
    if not isinstance(me, Principal):
        return me
    try:
        c = one(settings.mail_catcher_dir, key)
    except AppError:
        return Response("no such message", status_code=404, media_type="text/plain")
    return Response(
        _part(c.message, "html"),
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": HTML_PART_POLICY,
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
        },
    )


@router.get("/admin/outbox", response_class=HTMLResponse)
def outbox_page(request: Request, engine: EngineDep) -> Response:
    me = require_page(request, engine, Role.admin)
    if not isinstance(me, Principal):
        return me
    with open_session(engine) as s:
        rows = notify_service.parked(s)
    notice = N_("Queued again.") if request.query_params.get("done") == "resent" else None
    return render(request, "mailbox_parked.html", me, messages=rows, notice=notice)


@router.post("/admin/outbox/{message_id}/resend")
def outbox_resend(message_id: int, request: Request, engine: EngineDep) -> Response:
    check_origin(request)
    me = require_page(request, engine, Role.admin)
    if not isinstance(me, Principal):
        return me
    with write_session(engine) as s:
        notify_service.resend(s, me.actor, message_id)
    return RedirectResponse("/admin/outbox?done=resent", status_code=303)
