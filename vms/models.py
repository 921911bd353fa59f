"""Visitors, visits, series, the deny list, each site's visitor policy and the change table
the on-site board streams from.

A visitor's personal data (name, e-mail, phone, company, note) lives here and only here: the
door side knows the visitor as a pseudonymous user ("Visitor #12", an address under
``visitors.invalid``, no password, no role), and the audit trail names that user's id. Purging a
visitor empties these columns; the audit chain, which never held them, still verifies.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, Integer
from sqlmodel import Field, SQLModel

from core.db import JSONText, UTCDateTime, utcnow


class VisitStatus(StrEnum):
    invited = "invited"
    held = "held"  # a deny-list match waits for reception's or a manager's decision
    checked_in = "checked_in"
    checked_out = "checked_out"
    no_show = "no_show"
    denied = "denied"
    cancelled = "cancelled"


OPEN = frozenset({VisitStatus.invited, VisitStatus.held, VisitStatus.checked_in})
OVER = frozenset({VisitStatus.checked_out, VisitStatus.no_show, VisitStatus.denied, VisitStatus.cancelled})


class VisitorPolicy(SQLModel, table=True):
    """A site's visitor settings; a site without a row uses the defaults below."""

    __tablename__ = "visitor_policy"

    site_id: int = Field(sa_column=Column(Integer, ForeignKey("site.id", ondelete="CASCADE"), primary_key=True))
    retention_days: int = Field(default=90, description="personal data is purged this long after the last visit")
    closing_time: str | None = Field(default=None, max_length=5, description="local HH:MM: everyone is checked out")
    auto_checkout_hours: int | None = Field(default=12, description="check out N hours after check-in")
    release_minutes: int = Field(default=15, description="door access lasts this long past the expected end")
    margin_minutes: int = Field(default=60, description="an invitation is valid this long around its window")


class Visitor(SQLModel, table=True):
    __table_args__ = (Index("ix_visitor_site_name", "site_id", "name_norm"),)

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(
        sa_column=Column(Integer, ForeignKey("site.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("app_user.id", ondelete="CASCADE"), nullable=False, index=True),
        description="the pseudonymous door identity",
    )
    name: str = Field(default="", max_length=200)
    email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=40)
    company: str | None = Field(default=None, max_length=200)
    note: str | None = Field(default=None, max_length=500)
    name_norm: str | None = Field(default=None, max_length=200)
    email_norm: str | None = Field(default=None, max_length=254)
    phone_norm: str | None = Field(default=None, max_length=40)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    purged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class VisitSeries(SQLModel, table=True):
    """A recurring visitor (a cleaner every Tuesday): the rule, always bounded."""

    __tablename__ = "visit_series"

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(sa_column=Column(Integer, ForeignKey("site.id", ondelete="CASCADE"), nullable=False))
    host_id: int = Field(sa_column=Column(Integer, ForeignKey("app_user.id", ondelete="CASCADE"), nullable=False))
    visitor_id: int = Field(sa_column=Column(Integer, ForeignKey("visitor.id", ondelete="CASCADE"), nullable=False))
    rule: dict[str, Any] = Field(default_factory=dict, sa_type=JSONText)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Visit(SQLModel, table=True):
    __table_args__ = (
        Index("ix_visit_site_start", "site_id", "start"),
        Index("ix_visit_status", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(sa_column=Column(Integer, ForeignKey("site.id", ondelete="CASCADE"), nullable=False))
    host_id: int = Field(
        sa_column=Column(Integer, ForeignKey("app_user.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    visitor_id: int = Field(
        sa_column=Column(Integer, ForeignKey("visitor.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    series_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("visit_series.id", ondelete="SET NULL"), nullable=True)
    )
    start: datetime = Field(sa_type=UTCDateTime)
    end: datetime = Field(sa_type=UTCDateTime)
    purpose: str = Field(default="", max_length=200)
    door_ids: list[int] = Field(default_factory=list, sa_type=JSONText)
    status: str = Field(default=VisitStatus.invited.value, max_length=12)
    token_nonce: str | None = Field(default=None, max_length=64, description="the QR secret is derived from it")
    token_hash: str | None = Field(default=None, max_length=64, unique=True, index=True)
    qr_credential_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("credential.id", ondelete="SET NULL"), nullable=True)
    )
    badge_credential_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("credential.id", ondelete="SET NULL"), nullable=True)
    )
    hold_reason: str | None = Field(default=None, max_length=200)
    checked_in_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    checked_out_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DenyEntry(SQLModel, table=True):
    """A flagged visitor of one site, matched normalised and case-insensitively."""

    __tablename__ = "visitor_deny"

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(
        sa_column=Column(Integer, ForeignKey("site.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    name_norm: str | None = Field(default=None, max_length=200)
    email_norm: str | None = Field(default=None, max_length=254)
    phone_norm: str | None = Field(default=None, max_length=40)
    reason: str = Field(default="", max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class VisitEvent(SQLModel, table=True):
    """Arrivals and departures, in commit order per node: every node's stream polls `id > last`."""

    __tablename__ = "visit_event"
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(
        sa_column=Column(Integer, ForeignKey("site.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    visit_id: int = Field(sa_column=Column(Integer, ForeignKey("visit.id", ondelete="CASCADE"), nullable=False))
    kind: str = Field(max_length=12, description="arrival, departure, held")
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
