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
    "CARD_FORMATS",
    "SPELLINGS",
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
    "HoldOpen",
    "ListUsers",
    "OnlineDecide",
    "Presentation",
    "Report",
    "ReportCallback",
    "Revoke",
    "Unlock",
    "UserList",
    "Verdict",
    "canonical_card",
    "card_spellings",
    "presented_key",
    "utc",
]


def utc(value: datetime, name: str = "datetime") -> datetime:
    """Return ``value`` in UTC; refuse naive datetimes instead of guessing their zone."""
    if value.__class__ is datetime and value.tzinfo is UTC:  # as the database gives them back
        return value
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got a naive datetime")
    return value.astimezone(UTC)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


# --------------------------------------------------------------------------- card identities
#
# A badge is stored once, canonically, and spelled the way each reader will present it. Formats:
#   uid      the serial of an ISO 14443 card (MIFARE, NTAG, DESFire): 4, 7 or 10 bytes, kept as lower-case
#            hex with two digits per byte ("04a1b2c3");
#   em4100   a 125 kHz EM4100 tag's 5 bytes, the same way ("0a1b2c3d4e");
#   wiegand  the number a Wiegand reader reports for the card, in decimal ("1234567").
# Spellings (how a reader writes a card down): "hex" (two digits per byte), "hex_compact" (each byte in
# hex without its leading zero, as Arduino's String(byte, HEX) does: 0x0a 0x1b -> "a1b") and "decimal".
# Drivers know which spelling their reader uses; the gateway matches a presented string back to a card
# through ``presented_key``, so neither side guesses the other's case or padding.

CARD_FORMATS: tuple[str, ...] = ("uid", "em4100", "wiegand")
SPELLINGS: tuple[str, ...] = ("hex", "hex_compact", "decimal")
UID_LENGTHS = (4, 7, 10)
_SEPARATORS = str.maketrans("", "", " :-")
_HEX = frozenset("0123456789abcdef")


def canonical_card(card_format: str, raw: str) -> str:
    """The stored form of a card; ``ValueError`` says what is wrong in words a person can act on."""
    text = raw.strip().lower().translate(_SEPARATORS)
    if card_format == "wiegand":
        if not text.isdigit() or not text.isascii():
            raise ValueError("a Wiegand card number is the decimal number the reader reports")
        number = int(text)
        if number >= 2**64:
            raise ValueError("a Wiegand card number has at most 64 bits")
        return str(number)
    if card_format not in ("uid", "em4100"):
        raise ValueError(f"unknown card format {card_format!r} (uid, em4100 or wiegand)")
    if not text or not set(text) <= _HEX:
        raise ValueError("a card serial is written in hexadecimal, two digits per byte")
    if len(text) % 2:
        raise ValueError(
            "a card serial needs two hex digits per byte (write 0a, not a): an odd count cannot say which byte "
            "lost its leading zero"
        )
    size = len(text) // 2
    if card_format == "uid" and size not in UID_LENGTHS:
        hint = " (5 bytes is an EM4100 125 kHz tag: use format em4100)" if size == 5 else ""
        raise ValueError(f"an ISO 14443 card serial has 4, 7 or 10 bytes, not {size}{hint}")
    if card_format == "em4100" and size != 5:
        raise ValueError(f"an EM4100 tag number has 5 bytes, not {size}")
    return text


def compact_hex(value: str) -> str:
    """Each byte of a canonical hex serial without its leading zero (Arduino's ``String(b, HEX)``)."""
    return "".join(format(b, "x") for b in bytes.fromhex(value))


def card_spellings(card_format: str, value: str) -> dict[str, str]:
    """Every way some reader may present the card ``value`` (canonical) of ``card_format``."""
    if card_format == "uid":
        return {"hex": value, "hex_compact": compact_hex(value)}
    if card_format == "em4100":
        return {"hex": value}
    if card_format == "wiegand":
        return {"decimal": value}
    return {}


def presented_key(spelling: str, raw: str) -> str | None:
    """A presented string normalised for lookup in ``spelling``; None if it cannot be one."""
    text = raw.strip().lower()
    if spelling in ("hex", "hex_compact"):
        return text if text and set(text) <= _HEX else None
    if spelling == "decimal":
        return str(int(text)) if text.isdigit() and text.isascii() else None
    return None


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
    credential_format: str = "uid"  # how to read credential_uid (see card identities above)

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
    credential_format: str = "uid"

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
    """Bring the controller to hold exactly ``grants`` (after a reboot or reconnect, and to reconcile).

    Drivers that can read back what the controller holds apply it by difference: a controller that
    already matches is not written to at all."""

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


@dataclass(frozen=True, slots=True)
class HoldOpen:
    """Hold ``door_output`` released until ``until`` (a `free` window), or lock it again now (``until`` None).

    For controllers with permanent output control (OSDP); the controller also locks by itself at
    ``until`` where it can, so a lost link at the end of the window does not leave the door open."""

    command_id: str
    door_output: int
    until: datetime | None = None

    def __post_init__(self) -> None:
        _require(bool(self.command_id), "command_id is required")
        _require(self.door_output >= 1, "door_output starts at 1")
        if self.until is not None:
            object.__setattr__(self, "until", utc(self.until, "until"))


Command: TypeAlias = Grant | Revoke | Unlock | FullSync | ListUsers | HoldOpen


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The outcome of one command after the driver's own retries: ``ok`` only when acknowledged.

    ``changes`` says what the command changed on the controller where the driver can tell (a
    ``FullSync`` applied by difference: ``added``, ``rewritten``, ``removed`` card UIDs)."""

    command_id: str
    ok: bool
    detail: str = ""
    attempts: int = 0
    changes: dict[str, list[str]] = field(default_factory=dict)


# --------------------------------------------------------------------------- reports (driver -> gateway)

# key_taken, key_returned: a key cabinet's slot sensor; key_overdue: a key still out when its window ended.
DoorEventKind: TypeAlias = Literal[
    "granted", "denied", "forced", "held_open", "tamper", "unknown", "key_taken", "key_returned", "key_overdue"
]
DOOR_EVENT_KINDS: frozenset[str] = frozenset(
    {"granted", "denied", "forced", "held_open", "tamper", "unknown", "key_taken", "key_returned", "key_overdue"}
)


@dataclass(frozen=True, slots=True)
class DoorEvent:
    """Something happened at a door. ``at`` is when the gateway received it (device clocks drift).

    ``credential_uid`` is the card as the reader spelled it; ``spellings`` are the ways that reader may
    spell a card (one per reader chip wired to the controller), tried in order to find its owner."""

    controller_key: str
    kind: DoorEventKind
    credential_uid: str | None
    door_output: int | None
    at: datetime
    raw: dict[str, Any] = field(default_factory=dict)
    spellings: tuple[str, ...] = ("hex",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", utc(self.at, "at"))
        _require(self.kind in DOOR_EVENT_KINDS, f"unknown door event kind {self.kind!r}")
        _require(all(s in SPELLINGS for s in self.spellings), f"unknown spelling in {self.spellings!r}")


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
    """The controller's own online/offline statement (e.g. an MQTT last will), or the driver's when
    it cannot reach the controller; ``reason`` says why it is offline, in words a person can act on
    ("no Bluetooth adapter", "not found"), empty when unknown."""

    controller_key: str
    online: bool
    at: datetime
    reason: str = ""
    degraded: bool = False  # not online, but it answers: a wrong key, a garbled line (the gateway shows `degraded`)

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


# --------------------------------------------------------------------------- online decisions (driver -> gateway)
#
# Readers that hold no card list (OSDP) ask the gateway at every presentation. The driver calls an
# ``OnlineDecide`` given to it by the composition root, on its own I/O thread: the answer must come
# from memory (no I/O), and "no data" is a refusal with its reason.

PRESENTATION_KINDS: frozenset[str] = frozenset({"badge", "pin", "qr"})


@dataclass(frozen=True, slots=True)
class Presentation:
    """A credential shown at ``door_output`` of ``controller_key``: a card as the reader spelled it
    (``spellings`` as in ``DoorEvent``), a PIN typed on the keypad, or a QR code's text."""

    controller_key: str
    door_output: int
    kind: str
    value: str
    at: datetime
    spellings: tuple[str, ...] = ("hex",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", utc(self.at, "at"))
        _require(self.kind in PRESENTATION_KINDS, f"unknown presentation kind {self.kind!r}")
        _require(self.door_output >= 1, "door_output starts at 1")

    def __repr__(self) -> str:  # a PIN or a QR secret must not reach a log through a repr
        shown = self.value if self.kind == "badge" else "***"
        return f"Presentation({self.controller_key!r}, {self.door_output}, {self.kind}, {shown!r})"


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str  # granted, unknown_credential, no_window, no_decision_data, ...


OnlineDecide: TypeAlias = Callable[[Presentation], Verdict]


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


@runtime_checkable
class BatchSender(Protocol):
    """Optional for a driver: ``send`` for many commands at once, at less cost per command.

    Results come back in the order of ``pairs``; a controller the driver does not know or a
    transport that is down is a failed result, never an exception. What each command does and
    how it is retried is ``send``'s. The gateway uses it when a driver has it.
    """

    async def send_batch(self, pairs: Sequence[tuple[str, Command]]) -> list[CommandResult]: ...
