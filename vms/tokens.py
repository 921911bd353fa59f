"""The visit's secret: what its QR code carries, the visitor's door credential for its window.

A visit stores a random nonce (128 bits from `secrets`) and the SHA-256 of its token, never the
token. The token is an HMAC of the visit id and the nonce under a key derived from the app's
secret key, so the host's page can draw the QR code again later while whoever reads the
database alone can neither read nor forge one. Revoking a visit clears both: its code is dead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from functools import lru_cache

from config import get_settings

PREFIX = "bgv_"
NONCE_BYTES = 16  # 128 random bits
MAX_LENGTH = 100  # anything longer is refused before any work
_SHAPE = re.compile(r"bgv_[A-Za-z0-9_-]{43}")
_LABEL = b"bookgate visit token v1"


@lru_cache(maxsize=4)
def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _LABEL, hashlib.sha256).digest()


def new_nonce() -> str:
    return secrets.token_hex(NONCE_BYTES)


def token_for(visit_id: int, nonce: str) -> str:
    mac = hmac.new(_key(get_settings().effective_secret_key()), f"{visit_id}:{nonce}".encode(), hashlib.sha256)
    return PREFIX + base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def well_formed(token: str) -> bool:
    return len(token) <= MAX_LENGTH and _SHAPE.fullmatch(token) is not None
