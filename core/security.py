"""Password hashing (Argon2id) and opaque tokens (random, stored only as SHA-256)."""

from __future__ import annotations

import hashlib
import secrets
import string
from functools import lru_cache
from itertools import pairwise

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from config import Settings

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # NIST SP 800-63B asks for at least 64; Argon2id takes any length


class WeakPassword(ValueError):
    """A password the policy refuses, with a machine-readable reason code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@lru_cache(maxsize=1)
def _common_passwords() -> frozenset[str]:
    """The 30,000 most common passwords of the leaked-password corpora, as shipped by zxcvbn."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(p.lower() for p in FREQUENCY_LISTS["passwords"])


_SEQUENCES = (
    string.digits,
    string.ascii_lowercase,
    "qwertyuiopasdfghjklzxcvbnm",  # keyboard rows, one after the other
    "qwertzuiopasdfghjklyxcvbnm",
    "azertyuiopqsdfghjklmwxcvbn",
)


def _is_sequence(p: str) -> bool:
    """Characters in a run: ascending or descending code points or digits (wrapping 9->0), or a
    stretch of a keyboard row; '1234567890', 'abcdefghij', 'qwertyuiop', '9876543210'."""
    steps = {ord(b) - ord(a) for a, b in pairwise(p)}
    if steps in ({1}, {-1}):
        return True
    if p.isascii() and p.isdigit() and len({(int(b) - int(a)) % 10 for a, b in pairwise(p)}) == 1:
        return True  # '1234567890', '0987654321', '1357913579'
    for seq in _SEQUENCES:
        for row in (seq, seq[::-1]):
            if p in row * 3:
                return True
    return False


def _is_repetition(p: str) -> bool:
    """One character repeated, or a short unit repeated: 'aaaaaaaaaa', 'abababababab', '123123123123'."""
    n = len(p)
    return any(n % k == 0 and n // k >= 3 and p[:k] * (n // k) == p for k in range(1, n // 3 + 1))


def check_password(password: str) -> None:
    """NIST SP 800-63B (5.1.1.2) for a new password: at least `MIN_PASSWORD_LENGTH` characters, up to
    `MAX_PASSWORD_LENGTH`, any characters (spaces included), no composition rules; refused when it is
    a known common or breached password (also with digits or symbols added at either end), one
    character or a short unit repeated, or a sequence. Raises `WeakPassword` with a reason code."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword("password_too_short", f"use at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword("password_too_long", f"use at most {MAX_PASSWORD_LENGTH} characters")
    folded = password.strip().lower()
    if len(set(folded)) <= 1 or _is_repetition(folded):
        raise WeakPassword("password_repetitive", "a password of repeated characters is too easy to guess")
    if _is_sequence(folded):
        raise WeakPassword("password_sequence", "a password made of a sequence is too easy to guess")
    common = _common_passwords()
    core = folded.strip(string.digits + string.punctuation + " ")
    if folded in common or (len(core) >= 4 and core in common):
        raise WeakPassword("password_common", "this password is among the most commonly used; choose another")


class PasswordHashing:
    """Argon2id at one cost, and a dummy hash so refusing an unknown account costs what refusing
    a wrong password costs (timing does not reveal accounts). Built from the settings
    (`hashing_for`) and handed to whatever hashes: no module-wide hasher to share or patch."""

    def __init__(self, *, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash or self._dummy, password) and password_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """True for hashes made at another cost: they are redone at the next successful login."""
        return self._hasher.check_needs_rehash(password_hash)


@lru_cache(maxsize=8)
def _hashing(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHashing:
    return PasswordHashing(time_cost=time_cost, memory_kib=memory_kib, parallelism=parallelism)


def hashing_for(settings: Settings) -> PasswordHashing:
    """The hashing the settings ask for (one object per cost, built once)."""
    return _hashing(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)


def new_token(prefix: str) -> str:
    """256 bits from `secrets`, with a prefix telling sessions and API keys apart in logs."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def token_hash(token: str) -> str:
    # Tokens carry 256 random bits: a fast hash is enough, no stretching needed.
    return hashlib.sha256(token.encode()).hexdigest()


def generate_password() -> str:
    return secrets.token_urlsafe(12)
