"""Delivery's API: webhook endpoints and parked messages (admins), calendars and preferences (everyone)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel

from bms.calendar import reservation_ics
from bms.queries import get_visible
from core.deps import AdminUser, CurrentUser, SessionDep, SettingsDep, WriteSessionDep
from notify import service
from notify.service import OutboxPublic, Preferences, WebhookCreate, WebhookCreated, WebhookPublic

router = APIRouter(prefix="/api/v1")
ICS = "text/calendar; charset=utf-8"


def _ics(body: bytes, name: str) -> Response:
    return Response(
        body,
        media_type=ICS,
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "private, no-store"},
    )


@router.post("/webhooks", response_model=WebhookCreated, status_code=status.HTTP_201_CREATED, tags=["webhooks"])
def create_webhook(
    data: WebhookCreate, admin: AdminUser, session: WriteSessionDep, settings: SettingsDep
) -> WebhookCreated:
    """A site's receiver of signed messages; the secret is in this answer only."""
    return service.create_webhook(session, settings, admin.actor, data)


@router.get("/webhooks", response_model=list[WebhookPublic], tags=["webhooks"])
def list_webhooks(_admin: AdminUser, session: SessionDep) -> list[WebhookPublic]:
    return service.list_webhooks(session)


@router.delete("/webhooks/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["webhooks"])
def delete_webhook(endpoint_id: int, admin: AdminUser, session: WriteSessionDep) -> Response:
    service.delete_webhook(session, admin.actor, endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/outbox/parked", response_model=list[OutboxPublic], tags=["outbox"])
def parked(
    _admin: AdminUser, session: SessionDep, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[OutboxPublic]:
    """Messages that failed too often and wait for someone to look at them."""
    return service.parked(session, limit)


@router.post("/outbox/{message_id}/resend", response_model=OutboxPublic, tags=["outbox"])
def resend(message_id: int, admin: AdminUser, session: WriteSessionDep) -> OutboxPublic:
    """Queue a parked message again, with the same message id (receivers drop duplicates)."""
    return service.resend(session, admin.actor, message_id)


@router.get("/reservations/{reservation_id}/calendar.ics", tags=["calendar"], response_class=Response)
def reservation_calendar(reservation_id: int, principal: CurrentUser, session: SessionDep) -> Response:
    r, _ctx = get_visible(session, principal, reservation_id)
    return _ics(reservation_ics(session, r), f"reservation-{reservation_id}.ics")


@router.get("/resources/{key}/calendar.ics", tags=["calendar"], response_class=Response)
def resource_calendar(key: str, principal: CurrentUser, session: SessionDep) -> Response:
    """The resource's bookings as a feed, for its venue's managers."""
    return _ics(service.resource_calendar(session, principal, key), f"{key}.ics")


class FeedOut(BaseModel):
    token: str
    path: str


@router.post("/calendar/feed", response_model=FeedOut, status_code=status.HTTP_201_CREATED, tags=["calendar"])
def new_feed(principal: CurrentUser, session: WriteSessionDep) -> FeedOut:
    """A subscription URL for the caller's bookings; it replaces (revokes) any earlier one."""
    token = service.new_feed(session, principal)
    return FeedOut(token=token, path=f"/api/v1/calendar/feeds/{token}.ics")


@router.delete("/calendar/feed", status_code=status.HTTP_204_NO_CONTENT, tags=["calendar"])
def revoke_feed(principal: CurrentUser, session: WriteSessionDep) -> Response:
    service.revoke_feeds(session, principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/calendar/feeds/{token}.ics", tags=["calendar"], response_class=Response)
def feed(token: str, session: SessionDep) -> Response:
    """The token is the credential (calendar clients send no header); revoke it to close the feed."""
    return _ics(service.feed_for_token(session, token), "bookgate.ics")


@router.get("/me/notifications", response_model=Preferences, tags=["notifications"])
def get_preferences(principal: CurrentUser, session: SessionDep) -> Preferences:
    return service.get_preferences(session, principal.user_id)


@router.put("/me/notifications", response_model=Preferences, tags=["notifications"])
def set_preferences(data: Preferences, principal: CurrentUser, session: WriteSessionDep) -> Preferences:
    return service.set_preferences(session, principal.user_id, data)
