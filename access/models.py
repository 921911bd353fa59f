"""Controllers and the doors they drive. Doors name the resources they serve by id only:
access never imports the booking side."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, ForeignKey, Integer
from sqlmodel import Field, SQLModel

from bookgate.db import JSONText


class Controller(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=63, unique=True, index=True)
    site_id: int = Field(
        sa_column=Column(Integer, ForeignKey("site.id", ondelete="RESTRICT"), nullable=False, index=True)
    )
    name: str = Field(max_length=200)
    driver: str = Field(max_length=20)
    settings: dict[str, Any] = Field(default_factory=dict, sa_type=JSONText)
    active: bool = True


class Door(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=63, unique=True, index=True)
    site_id: int = Field(
        sa_column=Column(Integer, ForeignKey("site.id", ondelete="RESTRICT"), nullable=False, index=True)
    )
    name: str = Field(max_length=200)
    kind: str = Field(default="door", max_length=20)
    controller_id: int = Field(
        sa_column=Column(Integer, ForeignKey("controller.id", ondelete="RESTRICT"), nullable=False, index=True)
    )
    output: int = 1
    slots: int | None = None
    shared: bool = False
    active: bool = True


class DoorResource(SQLModel, table=True):
    """Which doors let a resource's beneficiaries in (its own door and shared entrances)."""

    __tablename__ = "door_resource"

    door_id: int = Field(
        sa_column=Column(Integer, ForeignKey("door.id", ondelete="CASCADE"), primary_key=True)
    )
    resource_id: int = Field(
        sa_column=Column(Integer, ForeignKey("resource.id", ondelete="CASCADE"), primary_key=True, index=True)
    )
