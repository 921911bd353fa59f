"""The contract between the gateway and controller drivers.

Drivers import this module and nothing else from ``access``: it is stdlib-only so a driver can be
tested, simulated and benchmarked without the database or the web stack. Every timestamp is an
aware datetime normalised to UTC; a naive one is refused at construction, because a controller
that opens a door one time zone off is worse than one that fails loudly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

__all__ = [
    "Availability",
    "Booted",
    "Command",
    "CommandResult",
    "ControllerDriver",
    "ControllerUnavailable",
    "DoorEvent",
    "DoorEventKind",
    "FullSync",
    "Grant",
    "Heartbeat",
    "ListUsers",
    "Report",
    "ReportCallback",
    "Revoke",
    "Unlock",
    "UserList",
    "utc",
]


def utc(value: datetime, name: str = "datetime") -> datetime:
    """Return ``value`` in UTC; refuse naive datetimes instead of guessing their zone."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got a naive datetime")
    return value.astimezone(UTC)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


# --------------------------------------------------------------------------- commands (gateway -> driver)


@dataclass(frozen=True, slots=True)
class Grant:
    """Let ``credential_uid`` open ``door_output`` from ``valid_from`` to ``valid_until``.

    Idempotent: sending the same grant twice leaves the controller as after the first. A later
    grant for the same credential and door replaces the earlier window.
    """

    command_id: str
    door_output: int
    credential_uid: str
    user_label: str
    valid_from: datetime
    valid_until: datetime
    pin: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "valid_from", utc(self.valid_from, "valid_from"))
        object.__setattr__(self, "valid_until", utc(self.valid_until, "valid_until"))
        _require(bool(self.command_id), "command_id is required")
        _require(bool(self.credential_uid), "credential_uid is required")
        _require(self.door_output >= 1, "door_output starts at 1")
        _require(self.valid_until > self.valid_from, "valid_until must be after valid_from")


@dataclass(frozen=True, slots=True)
class Revoke:
    """Withdraw ``credential_uid`` from ``door_output``; revoking an absent credential is a success."""

    command_id: str
    door_output: int
    credential_uid: str

    def __post_init__(self) -> None:
        _require(bool(self.command_id), "command_id is required")
        _require(bool(self.credential_uid), "credential_uid is required")
        _require(self.door_output >= 1, "door_output starts at 1")


@dataclass(frozen=True, slots=True)
class Unlock:
    """Release ``door_output`` once, for ``seconds`` where the controller lets the caller choose."""

    command_id: str
    door_output: int
    seconds: int = 5

    def __post_init__(self) -> None:
        _require(bool(self.command_id), "command_id is required")
        _require(self.door_output >= 1, "door_output starts at 1")
        _require(self.seconds > 0, "seconds must be positive")


@dataclass(frozen=True, slots=True)
class FullSync:
    """Replace everything the controller holds by exactly ``grants`` (after a reboot or reconnect)."""

    command_id: str
    grants: Sequence[Grant] = ()

    def __post_init__(self) -> None:
        _require(bool(self.command_id), "command_id is required")
        object.__setattr__(self, "grants", tuple(self.grants))


@dataclass(frozen=True, slots=True)
class ListUsers:
    """Ask the controller which credentials it holds; the answer is a ``UserList`` report."""

    command_id: str

    def __post_init__(self) -> None:
        _require(bool(self.command_id), "command_id is required")


Command: TypeAlias = Grant | Revoke | Unlock | FullSync | ListUsers


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The outcome of one command after the driver's own retries: ``ok`` only when acknowledged."""

    command_id: str
    ok: bool
    detail: str = ""
    attempts: int = 0


# --------------------------------------------------------------------------- reports (driver -> gateway)

DoorEventKind: TypeAlias = Literal["granted", "denied", "forced", "held_open", "tamper", "unknown"]
DOOR_EVENT_KINDS: frozenset[str] = frozenset({"granted", "denied", "forced", "held_open", "tamper", "unknown"})


@dataclass(frozen=True, slots=True)
class DoorEvent:
    """Something happened at a door. ``at`` is when the gateway received it (device clocks drift)."""

    controller_key: str
    kind: DoorEventKind
    credential_uid: str | None
    door_output: int | None
    at: datetime
    raw: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", utc(self.at, "at"))
        _require(self.kind in DOOR_EVENT_KINDS, f"unknown door event kind {self.kind!r}")


@dataclass(frozen=True, slots=True)
class Heartbeat:
    controller_key: str
    at: datetime
    uptime_s: int | None = None
    ip: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", utc(self.at, "at"))


@dataclass(frozen=True, slots=True)
class Availability:
    """The controller's own online/offline statement (e.g. an MQTT last will)."""

    controller_key: str
    online: bool
    at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", utc(self.at, "at"))


@dataclass(frozen=True, slots=True)
class Booted:
    """The controller (re)started or (re)connected: the gateway should send it a ``FullSync``."""

    controller_key: str
    at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", utc(self.at, "at"))


@dataclass(frozen=True, slots=True)
class UserList:
    """The credentials a controller holds, for reconciling it against the desired state."""

    controller_key: str
    uids: frozenset[str]
    at: datetime | None = None
    windows: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)  # where the device keeps them

    def __post_init__(self) -> None:
        object.__setattr__(self, "uids", frozenset(self.uids))
        if self.at is not None:
            object.__setattr__(self, "at", utc(self.at, "at"))


Report: TypeAlias = DoorEvent | Heartbeat | Availability | Booted | UserList
ReportCallback: TypeAlias = Callable[[Report], None]


class ControllerUnavailable(Exception):
    """The driver cannot reach the controller or its transport (broker, serial line, radio).

    Drivers translate their library's errors into this one type so the gateway has a single thing
    to catch; the original error is chained as ``__cause__``.
    """

    def __init__(self, message: str, controller_key: str | None = None) -> None:
        super().__init__(message)
        self.controller_key = controller_key


@runtime_checkable
class ControllerDriver(Protocol):
    """What the gateway needs from a driver.

    ``send`` is a coroutine: it publishes, waits for the controller's acknowledgement, retries with
    backoff, and returns a ``CommandResult`` (``ok=False`` after the last failed attempt). It raises
    ``ControllerUnavailable`` only when nothing could be attempted (transport down) and ``KeyError``
    for a controller the driver does not know.

    Reports arrive through callbacks registered with ``subscribe``. Callbacks run on the driver's
    I/O thread: keep them short and hand over to asyncio with ``loop.call_soon_threadsafe``.
    """

    def start(self) -> None: ...

    def stop(self) -> None: ...

    async def send(self, controller_key: str, command: Command) -> CommandResult: ...

    def subscribe(self, callback: ReportCallback) -> Callable[[], None]: ...

    def stale_controllers(self, now: datetime) -> list[str]: ...
