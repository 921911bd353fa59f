"""Reservable things. Every resource has at least one unit: the thing a booking occupies.

An exclusive room or court has one unit; a pool of identical parking spaces has one unit per
space and the system picks the unit; a capacity resource (a class of 12) has one unit that
holds up to `capacity` places.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Integer
from sqlmodel import Field, SQLModel

from bookgate.db import JSONText, UTCDateTime, utcnow


class Resource(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=63, unique=True, index=True)
    venue_id: int = Field(
        sa_column=Column(Integer, ForeignKey("venue.id", ondelete="RESTRICT"), nullable=False, index=True)
    )
    name: str = Field(max_length=200)
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
