"""Password hashing (Argon2id) and opaque tokens (random, stored only as SHA-256)."""

from __future__ import annotations

import hashlib
import secrets
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from config import Settings

MIN_PASSWORD_LENGTH = 10


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
