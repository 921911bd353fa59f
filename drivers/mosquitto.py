"""Mosquitto's own files for per-controller MQTT accounts: the password file and the ACL.

Each controller gets its own account, allowed on its own topics only, so a device that is
opened up and read out cannot speak for another door. The password file holds PBKDF2-SHA512
hashes in Mosquitto's `$7$` format (what `mosquitto_passwd` writes); the gateway never keeps
a controller's password, only this hash.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

ITERATIONS = 20_000  # mosquitto_passwd's default is 101; the broker reads the count from the entry


def password_hash(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, seven, iterations, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return seven == "7" and secrets.compare_digest(got, expected)


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    hashed: str
    topic: str | None = None  # a controller's base topic; None for the gateway (all of them)


def _safe(text: str) -> str:
    if not text or any(c in text for c in "\n\r:#+ ") or text.startswith("$"):
        raise ValueError(f"{text!r} cannot appear in a Mosquitto account or ACL")
    return text


def password_file(accounts: Sequence[Account]) -> str:
    return "".join(f"{_safe(a.username)}:{a.hashed}\n" for a in accounts)


def acl_file(gateway: Account, controllers: Sequence[Account]) -> str:
    """The gateway reads every controller's send/avty and writes its cmd; a controller reads its
    own cmd and writes its own send/avty, nothing else."""
    topics = sorted({_safe(c.topic) for c in controllers if c.topic})
    lines = ["# written by `bookgate mqtt files`; do not edit by hand", f"user {_safe(gateway.username)}"]
    for t in topics:
        lines += [f"topic read {t}/send", f"topic read {t}/avty", f"topic write {t}/cmd"]
    for c in controllers:
        if not c.topic:
            continue
        lines += ["", f"user {_safe(c.username)}", f"topic read {c.topic}/cmd"]
        lines += [f"topic write {c.topic}/send", f"topic readwrite {c.topic}/avty"]
    return "\n".join(lines) + "\n"
