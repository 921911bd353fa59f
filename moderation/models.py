"""Moderation tables: the managers' auto-approval conditions, change proposals, venue documents.

Conditions live here rather than in the site's Rules: they are the managers' moderation policy,
edited over the API, and bms never needs to know they exist (see moderation.policy).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Integer, LargeBinary
from sqlmodel import Field, SQLModel

from core.db import JSONText, UTCDateTime, utcnow


class ModerationPolicy(SQLModel, table=True):
    """When a `rules`-moderated request is approved without a manager. One row per venue (the
    default of its resources) or per resource (which replaces the venue's row as a whole)."""

    __tablename__ = "moderation_policy"
    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=40, unique=True, description="'venue:<id>' or 'resource:<id>': one row each")
    venue_id: int = Field(
        sa_column=Column(Integer, ForeignKey("venue.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    resource_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("resource.id", ondelete="CASCADE"), nullable=True)
    )
    conditions: dict[str, Any] = Field(default_factory=dict, sa_type=JSONText)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_by: int | None = None


class ChangeProposal(SQLModel, table=True):
    """ "Approve with change": other times or another unit, offered to the requester."""

    __tablename__ = "moderation_proposal"

    id: int | None = Field(default=None, primary_key=True)
    reservation_id: int = Field(
        sa_column=Column(Integer, ForeignKey("reservation.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    start: datetime = Field(sa_type=UTCDateTime)
    end: datetime = Field(sa_type=UTCDateTime)
    unit_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("resource_unit.id", ondelete="CASCADE"), nullable=True)
    )
    reason: str = Field(max_length=500)
    status: str = Field(default="open", max_length=12, description="open, accepted, declined, void")
    proposed_by: int
    based_on: datetime = Field(sa_type=UTCDateTime, description="the request's updated_at when proposed")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class VenueDocument(SQLModel, table=True):
    """House rules or access instructions, kept in the database so every gateway node serves them."""

    __tablename__ = "venue_document"

    id: int | None = Field(default=None, primary_key=True)
    venue_id: int = Field(
        sa_column=Column(Integer, ForeignKey("venue.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    resource_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("resource.id", ondelete="CASCADE"), nullable=True)
    )
    kind: str = Field(max_length=20)
    title: str = Field(max_length=200)
    filename: str = Field(max_length=200)
    content_type: str = Field(max_length=40)
    size: int
    sha256: str = Field(max_length=64)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    uploaded_by: int
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
