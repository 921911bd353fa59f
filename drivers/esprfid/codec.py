"""esp-rfid 2.x MQTT messages, both directions, as plain functions (no I/O).

What the firmware speaks (README-MQTT.md and the firmware's mqtt source):

* commands are JSON on ``<topic>/cmd`` and must carry ``doorip`` equal to the device's IP, or the
  device ignores them; several devices may therefore share one topic;
* everything the device says goes to ``<topic>/send``: ``boot``, ``heartbeat`` (default every
  180 s), ``access`` events, ``{"type": <cmd>, "ip", "hostname"}`` acknowledgements of
  ``adduser``/``deletuid``/``deletusers``, one message per stored user in answer to ``getuserlist``
  (no end marker), and log events (``"cmd": "event"``). The device answers ``getuserlist`` by
  re-publishing each user file as it was stored: a card added over MQTT comes back as the
  ``{"cmd": "adduser", "doorip", ...}`` command it was written with, one added on the device's web
  page as ``{"command": "userfile", ...}``; both are user records;
* the device publishes ``boot`` before it subscribes to ``<topic>/cmd``: a command sent in answer
  to the boot message can arrive before the subscription and be lost;
* a presented card is looked up as a file named after the UID the reader produced, spelled by the
  reader chip (see ``READERS``): the stored ``uid`` must be spelled exactly that way;
* availability is ``online``/``offline``, retained, on ``<topic>/avty`` (the offline one as the
  connection's last will);
* a user record holds ``uid``, ``user``, ``acctype`` (0 disabled, 1 always, 99 admin) and
  ``acctype2``..``acctype4`` for the relays 2 to 4, ``validsince``/``validuntil`` in Unix seconds,
  and an optional ``pincode``. The device keeps one validity window per card, shared by its relays.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from access.protocol import card_spellings

CMD = "cmd"
SEND = "send"
AVTY = "avty"
MAX_PAYLOAD = 8 * 1024
MAX_DOORS = 4
ACCTYPE_KEYS = ("acctype", "acctype2", "acctype3", "acctype4")
ACC_DISABLED, ACC_ALWAYS, ACC_ADMIN = 0, 1, 99
ACKED_COMMANDS = frozenset({"adduser", "deletuid", "deletusers", "updateconf"})
ONLINE, OFFLINE = "online", "offline"

# Access states the firmware reports; anything else is reported as an "unknown" door event.
GRANTED_STATES = frozenset({"Always", "Admin", "Granted"})
DENIED_STATES = frozenset({"Denied", "Disabled", "Expired", "Wrong pin code", "Not valid"})
REMOTE_UNLOCK_USER = "MQTT"  # the username on the access event that answers ``opendoor``


# The firmware's reader types (its hardware setting "readerType" 0..6) and the chips each one reads
# with. How each chip spells a card, from the firmware's reading loop:
#   mfrc522, pn532  every UID byte through Arduino's String(byte, HEX): lower-case, no leading zero
#                   (bytes 0x04 0x0a 0x1b -> "4a1b"), ISO 14443 serials ("uid" cards);
#   rdm6300         the 125 kHz tag's 5 bytes as "%02x" each (EM4100 tags), always 10 digits;
#   wiegand         the code the Wiegand library decodes, in decimal ("wiegand" cards).
READERS: dict[str, tuple[str, ...]] = {
    "mfrc522": ("mfrc522",),
    "wiegand": ("wiegand",),
    "pn532": ("pn532",),
    "rdm6300": ("rdm6300",),
    "rdm6300+mfrc522": ("rdm6300", "mfrc522"),
    "rdm6300+wiegand": ("rdm6300", "wiegand"),
    "rdm6300+pn532": ("rdm6300", "pn532"),
}
_CHIP_READS = {  # chip -> (card format it reads, spelling it writes the UID in)
    "mfrc522": ("uid", "hex_compact"),
    "pn532": ("uid", "hex_compact"),
    "rdm6300": ("em4100", "hex"),
    "wiegand": ("wiegand", "decimal"),
}


def reader_spellings(reader: str) -> tuple[str, ...]:
    """The spellings a controller's presented UIDs may be in, one per chip."""
    return tuple(dict.fromkeys(_CHIP_READS[chip][1] for chip in READERS[reader]))


def spell_for_reader(reader: str, card_format: str, value: str) -> str | None:
    """The UID under which the device must store the card ``value`` (canonical, see
    ``access.protocol``) so that this reader finds it; None if no chip of the reader can read it."""
    for chip in READERS[reader]:
        fmt, spelling = _CHIP_READS[chip]
        if fmt == card_format:
            return card_spellings(card_format, value).get(spelling)
    return None


class MalformedMessage(ValueError):
    """A payload that is not the JSON object the protocol promises."""


def acctype_key(door: int) -> str:
    if not 1 <= door <= MAX_DOORS:
        raise ValueError(f"esp-rfid drives relays 1 to {MAX_DOORS}, not {door}")
    return ACCTYPE_KEYS[door - 1]


def epoch(value: datetime) -> int:
    """Unix seconds of an aware datetime (the firmware compares whole seconds)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    return int(value.timestamp())


def from_epoch(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def to_int(value: Any, default: int | None = None) -> int | None:
    """Numbers arrive as JSON numbers or numeric strings (the README's own examples use strings)."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return default
    return default


# --------------------------------------------------------------------------- user records


@dataclass(slots=True)
class UserRecord:
    """One card as the device stores it: acctype per relay and one shared window."""

    uid: str
    user: str = ""
    acctypes: dict[int, int] = field(default_factory=dict)
    validsince: int = 0
    validuntil: int = 0
    pincode: str | None = None

    def acctype(self, door: int) -> int:
        return self.acctypes.get(door, ACC_DISABLED)

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"uid": self.uid, "user": self.user, "acctype": self.acctype(1)}
        for door in sorted(self.acctypes):
            if door > 1:
                out[acctype_key(door)] = self.acctypes[door]
        out["validsince"] = self.validsince
        out["validuntil"] = self.validuntil
        if self.pincode is not None:
            out["pincode"] = self.pincode
        return out

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> UserRecord:
        uid = data.get("uid")
        if not isinstance(uid, str | int) or isinstance(uid, bool) or str(uid) == "":
            raise MalformedMessage("user record without uid")
        acctypes: dict[int, int] = {}
        for door, key in enumerate(ACCTYPE_KEYS, start=1):
            value = to_int(data.get(key))
            if value is not None:
                acctypes[door] = value
        pincode = data.get("pincode")
        return cls(
            uid=str(uid),
            user=str(data.get("user") or ""),
            acctypes=acctypes,
            validsince=to_int(data.get("validsince"), 0) or 0,
            validuntil=to_int(data.get("validuntil"), 0) or 0,
            pincode=str(pincode) if pincode not in (None, "") else None,
        )


# --------------------------------------------------------------------------- outbound commands


def dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def adduser(doorip: str, record: UserRecord) -> dict[str, Any]:
    return {"cmd": "adduser", "doorip": doorip, **record.fields()}


def deletuid(doorip: str, uid: str) -> dict[str, Any]:
    return {"cmd": "deletuid", "doorip": doorip, "uid": uid}


def deletusers(doorip: str) -> dict[str, Any]:
    return {"cmd": "deletusers", "doorip": doorip}


def opendoor(doorip: str) -> dict[str, Any]:
    return {"cmd": "opendoor", "doorip": doorip}


def getuserlist(doorip: str) -> dict[str, Any]:
    return {"cmd": "getuserlist", "doorip": doorip}


# --------------------------------------------------------------------------- inbound (device -> gateway)


@dataclass(frozen=True, slots=True)
class Ack:
    command: str
    ip: str | None
    hostname: str | None


@dataclass(frozen=True, slots=True)
class Presence:
    """A ``boot`` or ``heartbeat`` message."""

    boot: bool
    time: int | None
    uptime: int | None
    ip: str | None
    hostname: str | None


@dataclass(frozen=True, slots=True)
class Access:
    known: bool
    states: tuple[str, ...]  # one per relay; a single-relay device sends a string
    uid: str
    username: str
    hostname: str | None
    time: int | None


@dataclass(frozen=True, slots=True)
class LogEvent:
    level: str
    src: str
    desc: str
    hostname: str | None


@dataclass(frozen=True, slots=True)
class UserFile:
    """One stored user, as listed by ``getuserlist``; ``ip`` is the ``doorip`` of a stored ``adduser``."""

    record: UserRecord
    hostname: str | None
    ip: str | None = None


Inbound = Ack | Presence | Access | LogEvent | UserFile


def loads(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD:
        raise MalformedMessage(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessage(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedMessage("not a JSON object")
    return data


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_send(payload: bytes) -> Inbound | None:
    """Decode one ``<topic>/send`` message; ``None`` for shapes we do not use, raise if malformed."""
    return parse_send_data(loads(payload))


def parse_send_data(data: dict[str, Any]) -> Inbound | None:
    hostname = _opt_str(data.get("hostname"))
    if data.get("command") == "userfile" or data.get("cmd") == "adduser":
        return UserFile(UserRecord.from_fields(data), hostname, _opt_str(data.get("doorip")))
    if data.get("cmd") == "event":
        return LogEvent(str(data.get("type", "")), str(data.get("src", "")), str(data.get("desc", "")), hostname)
    kind = data.get("type")
    if kind in ("boot", "heartbeat"):
        return Presence(
            boot=kind == "boot",
            time=to_int(data.get("time")),
            uptime=to_int(data.get("uptime")),
            ip=_opt_str(data.get("ip")),
            hostname=hostname,
        )
    if kind == "access":
        access = data.get("access")
        if isinstance(access, str):
            states: tuple[str, ...] = (access,)
        elif isinstance(access, list) and access and all(isinstance(a, str) for a in access):
            states = tuple(access)
        else:
            raise MalformedMessage("access event without access state")
        uid = data.get("uid")
        if not isinstance(uid, str | int) or isinstance(uid, bool):
            raise MalformedMessage("access event without uid")
        known = data.get("isKnown")
        return Access(
            known=known is True or known == "true",
            states=states,
            uid=str(uid).strip(),
            username=str(data.get("username") or ""),
            hostname=hostname,
            time=to_int(data.get("time")),
        )
    if isinstance(kind, str) and kind in ACKED_COMMANDS:
        return Ack(kind, _opt_str(data.get("ip")), hostname)
    return None


def parse_avty(payload: bytes) -> bool:
    text = payload.decode("utf-8", errors="replace").strip().lower()
    if text == ONLINE:
        return True
    if text == OFFLINE:
        return False
    raise MalformedMessage(f"availability payload {text[:40]!r} is neither online nor offline")


def access_kind(state: str) -> str:
    if state in GRANTED_STATES:
        return "granted"
    if state in DENIED_STATES:
        return "denied"
    return "unknown"


def log_event_kind(event: LogEvent) -> str | None:
    """Door events hidden in the firmware's log messages; ``None`` when it is not one."""
    if event.src != "tamper":
        return None
    desc = event.desc.lower()
    if "max open time" in desc:
        return "held_open"
    if "tampered" in desc:
        return "forced"
    return "tamper"


# --------------------------------------------------------------------------- device side (simulator)


def boot_message(now: int, ip: str, hostname: str) -> dict[str, Any]:
    return {"type": "boot", "time": now, "uptime": 0, "ip": ip, "hostname": hostname}


def heartbeat_message(now: int, uptime: int, ip: str, hostname: str) -> dict[str, Any]:
    return {"type": "heartbeat", "time": now, "uptime": uptime, "ip": ip, "hostname": hostname}


def ack_message(command: str, ip: str, hostname: str) -> dict[str, Any]:
    return {"type": command, "ip": ip, "hostname": hostname}


def access_message(
    now: int, known: bool, states: list[str], username: str, uid: str, hostname: str, door_names: list[str]
) -> dict[str, Any]:
    single = len(states) == 1
    return {
        "type": "access",
        "time": now,
        "isKnown": "true" if known else "false",
        "access": states[0] if single else states,
        "username": username,
        "uid": uid,
        "hostname": hostname,
        "doorName": door_names[0] if single else door_names,
    }


def log_message(level: str, src: str, desc: str, now: int, hostname: str, data: str = "") -> dict[str, Any]:
    return {"type": level, "src": src, "desc": desc, "data": data, "time": now, "cmd": "event", "hostname": hostname}
