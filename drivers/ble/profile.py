"""The Bookgate lock profile: one GATT service that a BLE lock or gate exposes to the gateway.

This docstring is the specification; the gateway side is implemented below, and the emulated lock
(``drivers.ble.emulator``) implements the lock side from this text on its own.

Service ``cc790000-954b-4669-9db0-bb8a30d6d15c`` holds three characteristics:

* records ``cc790001-...`` (write with response): the gateway writes one record per write;
* events ``cc790002-...`` (notify): the lock reports acknowledgements, presentations and door
  states;
* status ``cc790003-...`` (read): the last record counter the lock accepted, so that a gateway that
  restarted knows where to go on.

Integers are big-endian; times are Unix seconds (u32). Every record and every event ends with a
16-byte tag: HMAC-SHA256 under the lock's 32-byte key, truncated to its first 128 bits (RFC 2104
allows truncation to half the output; 128 bits leaves forgery at 2^-128 per try). The MAC input is
a domain label (``BGL1`` then 0x00 for gateway-to-lock records, 0x01 for lock-to-gateway events,
0x02 for the status value) followed by every byte before the tag, so nothing is malleable and a
record cannot be reflected as an event.

Records (gateway -> lock): ``version u8 (=1) | op u8 | counter u64 | body | tag[16]``. The lock
accepts a record only if its tag verifies and its counter is strictly greater than the last counter
it accepted (then it stores the counter before acting): a forged record is refused with ATT error
0x80, a replayed or reordered one with 0x81, a malformed one with 0x82. An accepted record is
answered by the write response and then by an ``ack`` event carrying the record's counter. Ops:

====  ===========  ======================================================================
op    name         body
====  ===========  ======================================================================
0x01  grant        output u8 | credential digest[16] | valid_from u32 | valid_until u32
0x02  revoke       output u8 | credential digest[16]
0x03  unlock       output u8 | seconds u16
0x04  sync-begin   (none): entries not granted again before sync-end will be dropped
0x05  sync-end     (none): drop the entries not granted since sync-begin
0x06  query        (none): changes nothing; the ack says what the lock holds
====  ===========  ======================================================================

The lock never receives a credential in clear (BLE without pairing is readable by anyone in
range): a grant names a credential by its digest, HMAC-SHA256(key, ``BGL1 credential`` |
format | 0x1f | value)[:16], with the canonical value (``access.protocol.canonical_card``) and its
format (``uid``, ``em4100``, ``wiegand``, ``ble``). The lock computes the digest of what its reader
presents the same way. A later grant for the same (output, digest) replaces the earlier window.

Events (lock -> gateway): ``version u8 (=1) | kind u8 | counter u64 | lock_time u32 | body |
tag[16]``; the event counter is the lock's own, strictly increasing, and the gateway drops an event
whose counter it has already seen (replay) or whose tag does not verify (forgery). Kinds:

====  ===========  ======================================================================
kind  name         body
====  ===========  ======================================================================
0x01  ack          record counter u64 | table hash[16]
0x02  granted      output u8 | format length u8 | format | value length u8 | value
0x03  denied       same as granted
0x04  door         output u8 | state u8 (0 closed, 1 open, 2 forced, 3 held open)
0x05  tamper       (none)
====  ===========  ======================================================================

The table hash is SHA-256 over the entries the lock holds, sorted, each as ``output u8 | digest |
valid_from u32 | valid_until u32``, truncated to 16 bytes: the gateway compares it with the hash of
what it wants there and writes nothing to a lock that already matches.

Status (read): ``version u8 (=1) | record counter u64 | tag[16]`` (domain 0x02). A stale status
replayed by an attacker can only make the gateway pick a counter that the lock refuses (0x81), after
which the gateway reads it again; it can never make the lock accept a record.

The key: 32 bytes, one per lock, never sent over the air and never logged. The gateway derives it
(HKDF-SHA256 from its credential key, with the lock's address in the info) and the lock is keyed
with it at installation.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "EVENTS_UUID",
    "RECORDS_UUID",
    "SERVICE_UUID",
    "STATUS_UUID",
    "LockEvent",
    "ProfileError",
    "credential_digest",
    "grant_record",
    "open_event",
    "open_status",
    "record",
    "revoke_record",
    "table_hash",
    "unlock_record",
]

SERVICE_UUID = "cc790000-954b-4669-9db0-bb8a30d6d15c"
RECORDS_UUID = "cc790001-954b-4669-9db0-bb8a30d6d15c"
EVENTS_UUID = "cc790002-954b-4669-9db0-bb8a30d6d15c"
STATUS_UUID = "cc790003-954b-4669-9db0-bb8a30d6d15c"

VERSION = 1
TAG_SIZE = 16
KEY_SIZE = 32
DOMAIN_RECORD = b"BGL1\x00"
DOMAIN_EVENT = b"BGL1\x01"
DOMAIN_STATUS = b"BGL1\x02"

OP_GRANT, OP_REVOKE, OP_UNLOCK, OP_SYNC_BEGIN, OP_SYNC_END, OP_QUERY = 1, 2, 3, 4, 5, 6
EV_ACK, EV_GRANTED, EV_DENIED, EV_DOOR, EV_TAMPER = 1, 2, 3, 4, 5
DOOR_STATES = {0: "closed", 1: "open", 2: "forced", 3: "held_open"}

# ATT application errors the lock answers a refused record with.
ERR_BAD_TAG, ERR_REPLAY, ERR_MALFORMED = 0x80, 0x81, 0x82

U32_MAX = 2**32 - 1


class ProfileError(ValueError):
    """Bytes from the lock that are not what the profile says (bad tag, truncated, unknown)."""


def _tag(key: bytes, domain: bytes, data: bytes) -> bytes:
    return hmac.new(key, domain + data, hashlib.sha256).digest()[:TAG_SIZE]


def _check_key(key: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"a lock key has {KEY_SIZE} bytes")


def credential_digest(key: bytes, credential_format: str, value: str) -> bytes:
    """How the lock knows a credential without holding it (see the module docstring)."""
    _check_key(key)
    data = b"BGL1 credential" + credential_format.encode() + b"\x1f" + value.strip().lower().encode()
    return hmac.new(key, data, hashlib.sha256).digest()[:TAG_SIZE]


def _seconds(value: float) -> int:
    return max(0, min(U32_MAX, int(value)))


def record(key: bytes, op: int, counter: int, body: bytes = b"") -> bytes:
    """One authenticated record for the records characteristic."""
    _check_key(key)
    if not 0 < counter < 2**64:
        raise ValueError("a record counter is a positive 64-bit number")
    data = struct.pack(">BBQ", VERSION, op, counter) + body
    return data + _tag(key, DOMAIN_RECORD, data)


def grant_record(key: bytes, counter: int, output: int, digest: bytes, valid_from: float, valid_until: float) -> bytes:
    return record(
        key, OP_GRANT, counter, struct.pack(">B16sII", output, digest, _seconds(valid_from), _seconds(valid_until))
    )


def revoke_record(key: bytes, counter: int, output: int, digest: bytes) -> bytes:
    return record(key, OP_REVOKE, counter, struct.pack(">B16s", output, digest))


def unlock_record(key: bytes, counter: int, output: int, seconds: int) -> bytes:
    return record(key, OP_UNLOCK, counter, struct.pack(">BH", output, max(1, min(seconds, 0xFFFF))))


def table_hash(entries: Iterable[tuple[int, bytes, int, int]]) -> bytes:
    """The hash of a lock's table of (output, digest, valid_from, valid_until) entries."""
    h = hashlib.sha256()
    for output, digest, start, end in sorted(entries):
        h.update(struct.pack(">B16sII", output, digest, start, end))
    return h.digest()[:TAG_SIZE]


@dataclass(frozen=True, slots=True)
class LockEvent:
    kind: str  # ack, granted, denied, door, tamper
    counter: int
    lock_time: int
    output: int | None = None
    credential_format: str | None = None
    credential: str | None = None
    door_state: str | None = None
    acked: int | None = None  # ack: the record counter accepted
    table: bytes | None = None  # ack: the lock's table hash


_KINDS = {EV_ACK: "ack", EV_GRANTED: "granted", EV_DENIED: "denied", EV_DOOR: "door", EV_TAMPER: "tamper"}


def _verified(key: bytes, domain: bytes, data: bytes, minimum: int) -> bytes:
    if len(data) < minimum + TAG_SIZE:
        raise ProfileError(f"truncated ({len(data)} bytes)")
    body, tag = data[:-TAG_SIZE], data[-TAG_SIZE:]
    if not hmac.compare_digest(tag, _tag(key, domain, body)):
        raise ProfileError("bad tag (forged, corrupted, or another lock's key)")
    if body[0] != VERSION:
        raise ProfileError(f"unknown version {body[0]}")
    return body


def open_event(key: bytes, data: bytes) -> LockEvent:
    """A notification from the events characteristic, verified; ``ProfileError`` otherwise."""
    body = _verified(key, DOMAIN_EVENT, bytes(data), 14)
    _, kind, counter, lock_time = struct.unpack_from(">BBQI", body)
    rest = body[14:]
    name = _KINDS.get(kind)
    try:
        if name == "ack":
            acked, table = struct.unpack(">Q16s", rest)
            return LockEvent(name, counter, lock_time, acked=acked, table=table)
        if name in ("granted", "denied"):
            output, flen = rest[0], rest[1]
            fmt = rest[2 : 2 + flen].decode()
            vlen = rest[2 + flen]
            value = rest[3 + flen : 3 + flen + vlen]
            if len(value) != vlen or len(rest) != 3 + flen + vlen:
                raise ProfileError("credential length does not match")
            return LockEvent(name, counter, lock_time, output, fmt, value.decode())
        if name == "door":
            output, state = struct.unpack(">BB", rest)
            if state not in DOOR_STATES:
                raise ProfileError(f"unknown door state {state}")
            return LockEvent(name, counter, lock_time, output, door_state=DOOR_STATES[state])
        if name == "tamper" and not rest:
            return LockEvent(name, counter, lock_time)
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ProfileError(f"malformed {name} event: {exc}") from exc
    raise ProfileError(f"unknown or malformed event kind {kind}")


def open_status(key: bytes, data: bytes) -> int:
    """The record counter the lock last accepted, from the status characteristic."""
    body = _verified(key, DOMAIN_STATUS, bytes(data), 9)
    if len(body) != 9:
        raise ProfileError("malformed status")
    return int(struct.unpack_from(">Q", body, 1)[0])
