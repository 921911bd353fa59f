"""What delivery keeps besides the outbox: webhook endpoints, calendar feed tokens, people's
preferences and the reminders already written."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Integer, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.db import JSONText, UTCDateTime, utcnow


class WebhookEndpoint(SQLModel, table=True):
    """A receiver of one site's messages. Its signing secret is kept encrypted (`notify.webhooks.seal`):
    the sender needs it in clear to sign, so it cannot be hashed away."""

    __tablename__ = "webhook_endpoint"

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(
        sa_column=Column(Integer, ForeignKey("site.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    url: str = Field(max_length=2000)
    description: str = Field(default="", max_length=200)
    events: list[str] = Field(default_factory=list, sa_type=JSONText, description="message types; empty = all")
    secret: str = Field(sa_type=Text, description="the signing secret, encrypted")
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CalendarFeed(SQLModel, table=True):
    """A person's calendar subscription: the URL's token is shown once, only its SHA-256 is kept."""

    __tablename__ = "calendar_feed"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("app_user.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class NotifyPreference(SQLModel, table=True):
    """A person's choices; no row means the defaults (reminders on)."""

    __tablename__ = "notify_preference"

    user_id: int = Field(sa_column=Column(Integer, ForeignKey("app_user.id", ondelete="CASCADE"), primary_key=True))
    reminders: bool = True
    settings: dict[str, Any] = Field(default_factory=dict, sa_type=JSONText)


class ReminderSent(SQLModel, table=True):
    """One reminder written for one booking at one start time: a moved booking is reminded again."""

    __tablename__ = "reminder_sent"
    __table_args__ = (UniqueConstraint("reservation_id", "offset_minutes", "start"),)

    id: int | None = Field(default=None, primary_key=True)
    reservation_id: int = Field(
        sa_column=Column(Integer, ForeignKey("reservation.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    offset_minutes: int
    start: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
