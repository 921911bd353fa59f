"""Admins' and people's side of delivery: webhook endpoints, parked messages, calendar feeds and
preferences. Services flush, never commit; every security-relevant change is audited."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator
from sqlmodel import Session, col, select

from bms.calendar import resource_feed, user_feed
from bms.context import load_resource, manages
from config import Settings
from core import audit, outbox
from core.auth import Principal
from core.db import ident, utcnow
from core.errors import Conflict, Forbidden, NotFound, Unauthorized
from core.models import Site
from core.outbox import OutboxMessage
from notify import channels
from notify.messages import DELIVERY_KINDS, EVENT_KINDS
from notify.models import CalendarFeed, NotifyPreference, WebhookEndpoint

# ---------------------------------------------------------------- webhooks


class WebhookCreate(BaseModel):
    site: str = Field(max_length=63, description="the site's key")
    url: str = Field(max_length=2000, description="http(s) URL that receives POSTed JSON")
    description: str = Field(default="", max_length=200)
    events: list[str] = Field(default_factory=list, max_length=50, description="message types; empty = all")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("an http:// or https:// URL with a host")
        return v

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(EVENT_KINDS))
        if unknown:
            raise ValueError(f"unknown message types: {', '.join(unknown)}")
        return sorted(set(v))


class WebhookPublic(BaseModel):
    id: int
    site: str
    url: str
    description: str
    events: list[str]
    active: bool
    created_at: datetime


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="the signing secret, shown only now")


def _webhook_public(ep: WebhookEndpoint, site_key: str) -> WebhookPublic:
    return WebhookPublic(
        id=ident(ep),
        site=site_key,
        url=ep.url,
        description=ep.description,
        events=list(ep.events),
        active=ep.active,
        created_at=ep.created_at,
    )


def create_webhook(session: Session, settings: Settings, actor: audit.Actor, data: WebhookCreate) -> WebhookCreated:
    site = session.exec(select(Site).where(col(Site.key) == data.site)).first()
    if site is None:
        raise NotFound("site_not_found", f"no site {data.site}")
    secret = "whsec_" + secrets.token_urlsafe(32)
    ep = WebhookEndpoint(
        site_id=ident(site),
        url=data.url,
        description=data.description,
        events=data.events,
        secret=channels.seal(settings, secret),
    )
    session.add(ep)
    session.flush()
    audit.record(session, actor, "webhook.create", "webhook_endpoint", ep.id, after={"site": site.key, "url": ep.url})
    return WebhookCreated(**_webhook_public(ep, site.key).model_dump(), secret=secret)


def list_webhooks(session: Session) -> list[WebhookPublic]:
    rows = session.exec(
        select(WebhookEndpoint, Site.key)
        .join(Site, col(Site.id) == WebhookEndpoint.site_id)
        .order_by(col(WebhookEndpoint.id))
    ).all()
    return [_webhook_public(ep, key) for ep, key in rows]


def delete_webhook(session: Session, actor: audit.Actor, endpoint_id: int) -> None:
    ep = session.get(WebhookEndpoint, endpoint_id)
    if ep is None:
        raise NotFound("webhook_not_found", f"no webhook endpoint {endpoint_id}")
    url = ep.url
    session.delete(ep)
    session.flush()
    audit.record(session, actor, "webhook.delete", "webhook_endpoint", endpoint_id, before={"url": url})


# ---------------------------------------------------------------- parked messages


class OutboxPublic(BaseModel):
    id: int
    kind: str
    created_at: datetime
    attempts: int
    last_error: str | None
    failed_at: datetime | None
    done_at: datetime | None
    summary: str


def summary(msg: OutboxMessage) -> str:
    """What a person recognises a message by, never its whole body."""
    p = msg.payload
    if msg.kind == "notify.email":
        return f"{p.get('to', '')}: {p.get('subject', '')}"
    if msg.kind == "notify.webhook":
        body = p.get("body") or {}
        return f"webhook {p.get('endpoint_id')}: {body.get('type', '')} {body.get('id', '')}"
    return ", ".join(f"{k}={v}" for k, v in p.items() if isinstance(v, str | int))[:200]


def outbox_public(msg: OutboxMessage) -> OutboxPublic:
    return OutboxPublic(
        id=ident(msg),
        kind=msg.kind,
        created_at=msg.created_at,
        attempts=msg.attempts,
        last_error=msg.last_error,
        failed_at=msg.failed_at,
        done_at=msg.done_at,
        summary=summary(msg),
    )


def parked(session: Session, limit: int = 100) -> list[OutboxPublic]:
    return [outbox_public(m) for m in outbox.parked(session, [*EVENT_KINDS, *DELIVERY_KINDS], limit=limit)]


def resend(session: Session, actor: audit.Actor, message_id: int) -> OutboxPublic:
    msg = session.get(OutboxMessage, message_id)
    if msg is None or msg.kind not in (*EVENT_KINDS, *DELIVERY_KINDS):
        raise NotFound("message_not_found", f"no message {message_id}")
    again = outbox.resend(session, message_id)
    if again is None:
        raise Conflict("message_not_parked", "only a parked message can be sent again")
    audit.record(
        session,
        actor,
        "outbox.resend",
        "outbox",
        message_id,
        kind=again.kind,
        last_error=(again.last_error or "")[:200],
    )
    return outbox_public(again)


# ---------------------------------------------------------------- calendars and preferences


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_feed(session: Session, principal: Principal) -> str:
    """A new subscription token for the caller; any older one stops working."""
    revoke_feeds(session, principal, audit_it=False)
    token = secrets.token_urlsafe(32)
    session.add(CalendarFeed(user_id=principal.user_id, token_hash=_hash(token)))
    session.flush()
    audit.record(session, principal.actor, "calendar.feed_issued", "app_user", principal.user_id)
    return token


def revoke_feeds(session: Session, principal: Principal, *, audit_it: bool = True) -> int:
    now = utcnow()
    feeds = session.exec(
        select(CalendarFeed).where(
            col(CalendarFeed.user_id) == principal.user_id, col(CalendarFeed.revoked_at).is_(None)
        )
    ).all()
    for f in feeds:
        f.revoked_at = now
        session.add(f)
    session.flush()
    if feeds and audit_it:
        audit.record(session, principal.actor, "calendar.feed_revoked", "app_user", principal.user_id)
    return len(feeds)


def feed_for_token(session: Session, token: str) -> bytes:
    """The feed of the token's owner. The token is the credential (calendar clients send no
    header), so a malformed, unknown or revoked one is 401, with no hint which."""
    if not 20 <= len(token) <= 100:
        raise Unauthorized("not_authenticated", "no such calendar feed")
    feed = session.exec(
        select(CalendarFeed).where(col(CalendarFeed.token_hash) == _hash(token), col(CalendarFeed.revoked_at).is_(None))
    ).first()
    if feed is None:
        raise Unauthorized("not_authenticated", "no such calendar feed")
    return user_feed(session, feed.user_id)


def resource_calendar(session: Session, principal: Principal, key: str) -> bytes:
    ctx = load_resource(session, key)
    if not manages(principal, ctx):
        raise Forbidden("not_venue_manager", "only the venue's managers see this resource's calendar")
    return resource_feed(session, ctx.resource)


class Preferences(BaseModel):
    reminders: bool = Field(default=True, description="reminders 24 h and 1 h before a booking")


def get_preferences(session: Session, user_id: int) -> Preferences:
    pref = session.get(NotifyPreference, user_id)
    return Preferences(reminders=pref.reminders if pref else True)


def set_preferences(session: Session, user_id: int, data: Preferences) -> Preferences:
    pref = session.get(NotifyPreference, user_id) or NotifyPreference(user_id=user_id)
    pref.reminders = data.reminders
    session.add(pref)
    session.flush()
    return get_preferences(session, user_id)
