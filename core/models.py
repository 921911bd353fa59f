"""Core tables: the directory (sites, venues), people and their roles, sessions and keys.

Sites and venues live in the core because every domain scopes by them: a venue manager's
power stops at their venues, reception's at their sites.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.db import JSONText, UTCDateTime, utcnow


class Role(StrEnum):
    resident = "resident"
    venue_manager = "venue_manager"
    reception = "reception"
    admin = "admin"


class Site(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=63, unique=True, index=True)
    name: str = Field(max_length=200)
    timezone: str = Field(max_length=64)
    locale: str = Field(default="en", max_length=5)
    names: dict[str, str] = Field(default_factory=dict, sa_type=JSONText, description="name per language")
    defaults: dict[str, Any] = Field(default_factory=dict, sa_type=JSONText)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Venue(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=63, unique=True, index=True)
    site_id: int = Field(
        sa_column=Column(Integer, ForeignKey("site.id", ondelete="RESTRICT"), nullable=False, index=True)
    )
    name: str = Field(max_length=200)
    names: dict[str, str] = Field(default_factory=dict, sa_type=JSONText, description="name per language")
    rules: dict[str, Any] = Field(default_factory=dict, sa_type=JSONText)


class User(SQLModel, table=True):
    __tablename__ = "app_user"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254, unique=True, index=True)
    name: str = Field(max_length=200)
    unit: str | None = Field(default=None, max_length=60, description="flat / household")
    locale: str = Field(default="en", max_length=5)
    # True once the user (or an admin for them) chose `locale`; until then pages follow the browser
    # and messages the site's language.
    locale_chosen: bool = False
    password_hash: str | None = Field(default=None, max_length=255)
    is_active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class RoleGrant(SQLModel, table=True):
    """One role of one user, scoped: venue_manager to a venue, reception/resident to a site."""

    __tablename__ = "role_grant"
    __table_args__ = (UniqueConstraint("user_id", "role", "site_id", "venue_id"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("app_user.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    role: str = Field(max_length=20)
    site_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("site.id", ondelete="CASCADE"), nullable=True)
    )
    venue_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("venue.id", ondelete="CASCADE"), nullable=True)
    )


class AuthSession(SQLModel, table=True):
    """A bearer token's server side: only the token's hash is kept."""

    __tablename__ = "auth_session"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("app_user.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    token_hash: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    client_addr: str | None = Field(default=None, max_length=64)


class ApiKey(SQLModel, table=True):
    """A machine client's key; acts with the roles of the user it belongs to."""

    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("app_user.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    name: str = Field(max_length=100)
    prefix: str = Field(max_length=16, description="first characters, shown to tell keys apart")
    key_hash: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class LoginAttempt(SQLModel, table=True):
    """Failed logins, counted per account and per address for rate limiting across nodes."""

    __tablename__ = "login_attempt"
    __table_args__ = (
        Index("ix_login_attempt_email_at", "email", "at"),
        Index("ix_login_attempt_addr_at", "client_addr", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    email: str = Field(max_length=254)
    client_addr: str = Field(max_length=64)
