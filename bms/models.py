"""Reservable things. Every resource has at least one unit: the thing a booking occupies.

An exclusive room or court has one unit; a pool of identical parking spaces has one unit per
space and the system picks the unit; a capacity resource (a class of 12) has one unit that
holds up to `capacity` places.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, Integer, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from core.db import JSONText, UTCDateTime, utcnow


class Resource(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=63, unique=True, index=True)
    venue_id: int = Field(
        sa_column=Column(Integer, ForeignKey("venue.id", ondelete="RESTRICT"), nullable=False, index=True)
    )
    name: str = Field(max_length=200)
    names: dict[str, str] = Field(default_factory=dict, sa_type=JSONText, description="name per language")
    kind: str = Field(max_length=20)
    capacity: int = 1
    quota_group: str | None = Field(default=None, max_length=60)
    pool_strategy: str | None = Field(default=None, max_length=20)
    rules: dict[str, Any] = Field(default_factory=dict, sa_type=JSONText)
    access: dict[str, Any] = Field(default_factory=dict, sa_type=JSONText)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ResourceUnit(SQLModel, table=True):
    __tablename__ = "resource_unit"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=80, unique=True, index=True)
    resource_id: int = Field(
        sa_column=Column(Integer, ForeignKey("resource.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    name: str = Field(max_length=200)
    position: int = 0
    active: bool = True


# Blocks longer than this are flagged `long_span`: range queries look back only this far otherwise.
LONG_SPAN = timedelta(days=1)


class Series(SQLModel, table=True):
    """A recurring booking: an RRULE expanded in the site's zone, so local times survive DST."""

    id: int | None = Field(default=None, primary_key=True)
    resource_id: int = Field(
        sa_column=Column(Integer, ForeignKey("resource.id", ondelete="RESTRICT"), nullable=False, index=True)
    )
    planner_id: int = Field(
        sa_column=Column(Integer, ForeignKey("app_user.id", ondelete="RESTRICT"), nullable=False, index=True)
    )
    rrule: str = Field(max_length=500)
    until_local: str | None = Field(default=None, max_length=19, description="cut: occurrences before this only")
    dtstart_local: str = Field(max_length=19, description="first occurrence, local ISO time without offset")
    duration_minutes: int
    timezone: str = Field(max_length=64)
    places: int = 1
    beneficiary_ids: list[int] = Field(default_factory=list, sa_type=JSONText)
    note: str = Field(default="", max_length=1000)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Reservation(SQLModel, table=True):
    """One booking of one unit. `block_*` is the time range widened by the buffer: the range that
    no two exclusive active bookings of one unit may share (a database constraint on PostgreSQL)."""

    __table_args__ = (
        Index("ix_reservation_resource_block", "resource_id", "block_start"),
        Index("ix_reservation_unit_block", "unit_id", "block_start"),
        Index("ix_reservation_planner_status", "planner_id", "status", "end"),
        # Range scans look back one day from a window; the few longer bookings have their own index.
        Index(
            "ix_reservation_long",
            "resource_id",
            "block_end",
            sqlite_where=text("long_span"),
            postgresql_where=text("long_span"),
        ),
        UniqueConstraint("series_id", "occurrence_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    resource_id: int = Field(sa_column=Column(Integer, ForeignKey("resource.id", ondelete="RESTRICT"), nullable=False))
    unit_id: int = Field(sa_column=Column(Integer, ForeignKey("resource_unit.id", ondelete="RESTRICT"), nullable=False))
    planner_id: int = Field(sa_column=Column(Integer, ForeignKey("app_user.id", ondelete="RESTRICT"), nullable=False))
    start: datetime = Field(sa_type=UTCDateTime)
    end: datetime = Field(sa_type=UTCDateTime)
    block_start: datetime = Field(sa_type=UTCDateTime)
    block_end: datetime = Field(sa_type=UTCDateTime)
    access_start: datetime = Field(sa_type=UTCDateTime, description="restrict: doors open to beneficiaries")
    access_end: datetime = Field(sa_type=UTCDateTime, description="release: doors close again")
    exclusive: bool = True
    long_span: bool = Field(default=False, description="block longer than LONG_SPAN")
    places: int = 1
    status: str = Field(max_length=12)
    note: str = Field(default="", max_length=1000)
    series_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("series.id", ondelete="SET NULL"), nullable=True, index=True)
    )
    occurrence_key: str | None = Field(default=None, max_length=19, description="local start of the series slot")
    detached: bool = Field(default=False, description="changed on its own: series edits leave it alone")
    changes: int = 0
    status_reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ReservationBeneficiary(SQLModel, table=True):
    __tablename__ = "reservation_beneficiary"

    reservation_id: int = Field(
        sa_column=Column(Integer, ForeignKey("reservation.id", ondelete="CASCADE"), primary_key=True)
    )
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("app_user.id", ondelete="RESTRICT"), primary_key=True, index=True)
    )


class IdempotencyRecord(SQLModel, table=True):
    """The first answer to a create carrying an Idempotency-Key, replayed for retries."""

    __tablename__ = "idempotency_record"
    __table_args__ = (UniqueConstraint("user_id", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=Column(Integer, ForeignKey("app_user.id", ondelete="CASCADE"), nullable=False))
    key: str = Field(max_length=200)
    request_hash: str = Field(max_length=64)
    status_code: int
    response: dict[str, Any] = Field(default_factory=dict, sa_type=JSONText)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ReservationChange(SQLModel, table=True):
    """A reschedule waiting for a manager's approval; the booking keeps its original slot meanwhile."""

    __tablename__ = "reservation_change"

    id: int | None = Field(default=None, primary_key=True)
    reservation_id: int = Field(
        sa_column=Column(Integer, ForeignKey("reservation.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    requested_by: int = Field(sa_column=Column(Integer, ForeignKey("app_user.id", ondelete="RESTRICT"), nullable=False))
    start: datetime = Field(sa_type=UTCDateTime)
    end: datetime = Field(sa_type=UTCDateTime)
    status: str = Field(default="pending", max_length=12, description="pending, approved, rejected, void")
    reason: str | None = Field(default=None, max_length=500)
    base_version: datetime = Field(sa_type=UTCDateTime, description="the booking's updated_at when asked")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class CacheStamp(SQLModel, table=True):
    """A value that changes with what nodes cache (resources, units, rules; see bms.availability):
    every node compares it with one primary-key read instead of re-reading the configuration."""

    __tablename__ = "cache_stamp"
    name: str = Field(primary_key=True, max_length=40)
    stamp: str = Field(max_length=32)
