"""Controllers and the doors they drive. Doors name the resources they serve by id only:
access never imports the booking side."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from config import get_settings
from core.db import JSONText, UTCDateTime, utcnow


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
    state: str = Field(default="unknown", max_length=10, description="online, offline, degraded, unknown")
    last_seen: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_sync: datetime | None = Field(default=None, sa_type=UTCDateTime)
    mqtt_username: str | None = Field(default=None, max_length=80, description="its own broker account")
    mqtt_secret: str | None = Field(default=None, max_length=255, description="broker-format hash, never the password")


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

    door_id: int = Field(sa_column=Column(Integer, ForeignKey("door.id", ondelete="CASCADE"), primary_key=True))
    resource_id: int = Field(
        sa_column=Column(Integer, ForeignKey("resource.id", ondelete="CASCADE"), primary_key=True, index=True)
    )


class Credential(SQLModel, table=True):
    """What a person presents at a door: a badge UID, a PIN, a BLE key id, a key-cabinet slot, a QR.

    A badge is stored canonically (``access.protocol.canonical_card``): its ``format`` says whether
    ``value`` is an ISO 14443 serial, an EM4100 tag or a Wiegand number, and ``compact`` keeps the
    serial as byte-per-digit readers spell it, so a presented card finds its owner by an index."""

    __table_args__ = (
        UniqueConstraint("kind", "format", "value", name="uq_credential_kind_format_value"),
        Index("ix_credential_compact", "compact"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("app_user.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    kind: str = Field(max_length=10)
    format: str = Field(default="", max_length=10, description="badges: uid, em4100 or wiegand")
    value: str = Field(
        max_length=128,
        description="card UID, cabinet slot; PINs and BLE keys: a keyed lookup token (`lookup_token`)",
    )
    secret: str | None = Field(
        default=None, sa_type=Text, description="PINs and BLE keys: the value encrypted (Fernet), see `seal`"
    )
    compact: str | None = Field(default=None, max_length=40, description="uid badges: bytes without leading zeros")
    label: str = Field(default="", max_length=100)
    valid_from: datetime | None = Field(default=None, sa_type=UTCDateTime)
    valid_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AccessWindow(SQLModel, table=True):
    """Who may enter when, as told by the booking side, visits or access levels.

    A row targets either a resource (all the doors serving it, `resource_id`) or one door
    (`door_id`), never both. Access never reads reservations: bms writes these rows in the
    transaction of the change."""

    __tablename__ = "access_window"
    __table_args__ = (
        Index("ix_access_window_source", "source_type", "source_id"),
        Index("ix_access_window_resource_end", "resource_id", "end"),
        Index("ix_access_window_door_end", "door_id", "end"),
        CheckConstraint("(resource_id IS NULL) <> (door_id IS NULL)", name="ck_access_window_one_target"),
    )

    id: int | None = Field(default=None, primary_key=True)
    source_type: str = Field(max_length=20)
    source_id: int
    resource_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("resource.id", ondelete="CASCADE"), nullable=True)
    )
    door_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("door.id", ondelete="CASCADE"), nullable=True)
    )
    user_id: int = Field(sa_column=Column(Integer, ForeignKey("app_user.id", ondelete="CASCADE"), nullable=False))
    mode: str = Field(max_length=20)
    start: datetime = Field(sa_type=UTCDateTime)
    end: datetime = Field(sa_type=UTCDateTime)


class AccessLevel(SQLModel, table=True):
    """Standing access: a named set of a site's doors, open to its holders on a weekly schedule.

    `schedule` maps weekdays (mon..sun) to local wall-clock ranges ("06:00-09:00", "00:00-24:00")
    in the site's zone; `exceptions` are local dates (YYYY-MM-DD) when it opens nothing; `roles`
    are the site roles whose members hold it without being named (a site's default level names
    `resident`). Holders' windows are written by `access.levels`."""

    __tablename__ = "access_level"
    __table_args__ = (UniqueConstraint("site_id", "key", name="uq_access_level_site_key"),)

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(
        sa_column=Column(Integer, ForeignKey("site.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    key: str = Field(max_length=63)
    name: str = Field(max_length=200)
    schedule: dict[str, Any] = Field(default_factory=dict, sa_type=JSONText)
    exceptions: list[str] = Field(default_factory=list, sa_type=JSONText)
    roles: list[str] = Field(default_factory=list, sa_type=JSONText)
    mode: str = Field(default="badge", max_length=20)
    valid_from: date | None = None
    valid_until: date | None = Field(default=None, description="last local day it opens (inclusive)")


class AccessLevelDoor(SQLModel, table=True):
    __tablename__ = "access_level_door"

    level_id: int = Field(
        sa_column=Column(Integer, ForeignKey("access_level.id", ondelete="CASCADE"), primary_key=True)
    )
    door_id: int = Field(
        sa_column=Column(Integer, ForeignKey("door.id", ondelete="CASCADE"), primary_key=True, index=True)
    )


class AccessLevelHolder(SQLModel, table=True):
    """One person holding one level. `origin` says why: `role` (a member of one of the level's
    roles) or `admin` (assigned). Removing sets `active` false and keeps the row, so a role's
    level an admin took away is not handed back by the next sync."""

    __tablename__ = "access_level_holder"
    __table_args__ = (UniqueConstraint("level_id", "user_id", name="uq_access_level_holder"),)

    id: int | None = Field(default=None, primary_key=True)
    level_id: int = Field(
        sa_column=Column(Integer, ForeignKey("access_level.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("app_user.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    origin: str = Field(default="admin", max_length=10, description="role or admin")
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ExtraDoor(SQLModel, table=True):
    """A door added to one source's windows (a reservation's service door, say): the booking side
    passes these to `set_windows` each time it rewrites the source, so they follow its moves."""

    __tablename__ = "access_extra_door"

    source_type: str = Field(max_length=20, primary_key=True)
    source_id: int = Field(primary_key=True)
    door_id: int = Field(sa_column=Column(Integer, ForeignKey("door.id", ondelete="CASCADE"), primary_key=True))


class Transition(SQLModel, table=True):
    """A durable wake-up: at `due_at`, bring (door, credential) on its controller to the desired state.

    The row says *when* to look, never *what* to send: the dispatcher computes the command from
    the desired state at that moment, so a late or repeated transition still ends right."""

    __table_args__ = (
        Index("ix_transition_due", "status", "due_at"),
        Index("ix_transition_source", "source"),
    )

    id: int | None = Field(default=None, primary_key=True)
    controller_id: int = Field(
        sa_column=Column(Integer, ForeignKey("controller.id", ondelete="CASCADE"), nullable=False)
    )
    door_id: int = Field(sa_column=Column(Integer, ForeignKey("door.id", ondelete="CASCADE"), nullable=False))
    credential_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("credential.id", ondelete="CASCADE"), nullable=True)
    )
    action: str = Field(max_length=10, description="grant, revoke, open, close: what the due time is for")
    due_at: datetime = Field(sa_type=UTCDateTime)
    source: str = Field(max_length=40, description="e.g. reservation:42")
    status: str = Field(default="pending", max_length=10)
    attempts: int = 0
    claimed_by: str | None = Field(default=None, max_length=40)
    claimed_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    done_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=500)


class AccessEvent(SQLModel, table=True):
    """Something a controller saw at a door, with what explains it (the window's source)."""

    __tablename__ = "access_event"
    __table_args__ = (
        Index("ix_access_event_door_at", "door_id", "at"),
        Index("ix_access_event_user_at", "user_id", "at"),
        Index("ix_access_event_source", "source"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime, index=True, description="when the gateway received it")
    controller_id: int = Field(
        sa_column=Column(Integer, ForeignKey("controller.id", ondelete="CASCADE"), nullable=False)
    )
    door_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("door.id", ondelete="SET NULL"), nullable=True)
    )
    kind: str = Field(max_length=12, description="granted, denied, forced, held_open, tamper, unknown")
    presented: str | None = Field(default=None, max_length=128, description="the card UID the reader saw")
    credential_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("credential.id", ondelete="SET NULL"), nullable=True)
    )
    user_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("app_user.id", ondelete="SET NULL"), nullable=True)
    )
    source: str | None = Field(default=None, max_length=40, description="the window that explains it")
    decided_by: str = Field(default="controller", max_length=12, description="controller or gateway (online)")
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSONText)


class AccessChange(SQLModel, table=True):
    """A change log of who-may-enter: gateway nodes replay it to keep their decision index in step."""

    __tablename__ = "access_change"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused, even after trimming

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=12, description="source or credential")
    ref: str = Field(max_length=40, description="e.g. reservation:42, or a credential id")
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# ---------------------------------------------------------------- secrets at rest
#
# A QR code is sealed the same way: only its keyed token is looked up, and it is decided online
# (never stored on a controller), so the sealed value serves only to show the code again.
#
# PINs and BLE keys must be sent to controllers, so they cannot be hashed away: they are
# encrypted (Fernet: AES-128-CBC + HMAC-SHA256) into `Credential.secret`, and `Credential.value`
# holds a keyed HMAC of the value instead, which keeps the unique constraint and lookups by a
# presented value working without ever storing the value in clear. Both keys are derived with
# HKDF-SHA256 from `Settings.credential_key`, or when it is empty from the app's secret key
# (`Settings.effective_secret_key()`); neither lives in the database.

SEALED_KINDS = frozenset({"pin", "ble", "qr"})
_LOOKUP_PREFIX = "h1:"


@lru_cache(maxsize=4)
def _derived(material: str) -> tuple[Fernet, bytes]:
    def hkdf(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material.encode())

    return Fernet(base64.urlsafe_b64encode(hkdf(b"bookgate credential encryption v1"))), hkdf(
        b"bookgate credential lookup v1"
    )


def _keys() -> tuple[Fernet, bytes]:
    settings = get_settings()
    return _derived(settings.credential_key or settings.effective_secret_key())


def seal(value: str) -> str:
    """The value encrypted for `Credential.secret`."""
    return _keys()[0].encrypt(value.encode()).decode()


def unseal(token: str) -> str:
    return _keys()[0].decrypt(token.encode()).decode()


def lookup_token(kind: str, value: str) -> str:
    """What `Credential.value` holds for a sealed kind: a keyed HMAC of the value (other kinds: the value)."""
    if kind not in SEALED_KINDS:
        return value
    mac = hmac.new(_keys()[1], f"{kind}\x1f{value}".encode(), hashlib.sha256).hexdigest()
    return _LOOKUP_PREFIX + mac


def plain_value(cred: Credential) -> str:
    """The value to send to a controller or compare: decrypted for PINs and BLE keys. Call it only there."""
    return unseal(cred.secret) if cred.secret is not None else cred.value
