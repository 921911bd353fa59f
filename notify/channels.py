"""The two ways out: e-mail over SMTP and signed webhooks. Both are blocking I/O run on the
delivery worker's threads, never on the event loop; each raises on failure so the outbox retries.

A webhook request carries `X-Bookgate-Signature: t=<unix time>,v1=<hex>`, where the hex is
HMAC-SHA256 under the endpoint's secret over `"<t>.<raw body>"`: a receiver recomputes it,
compares in constant time and refuses a `t` older than a few minutes (a replay).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.header import Header
from email.message import Message
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate
from functools import lru_cache
from typing import Any

import httpx
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from config import Settings

SIGNATURE_HEADER = "X-Bookgate-Signature"
TOLERANCE_SECONDS = 300


class Refused(Exception):
    """The receiver answered, and said no."""


# ---------------------------------------------------------------- e-mail


def build_email(payload: dict[str, Any], mail_from: str, images: list[tuple[str, bytes]] | None = None) -> Message:
    """multipart/mixed: (text | HTML) as alternatives, then the .ics. Built with the compat32
    classes: the same MIME as EmailMessage's, at a fraction of its header-parsing cost."""
    body = MIMEMultipart("alternative")
    body.attach(MIMEText(payload["text"], "plain", "utf-8"))
    body.attach(MIMEText(payload["html"], "html", "utf-8"))
    if payload.get("ics") or images:
        msg: MIMEMultipart = MIMEMultipart("mixed")
        msg.attach(body)
        if payload.get("ics"):
            ics = MIMEText(payload["ics"], "calendar", "utf-8")
            ics.set_param("method", "PUBLISH")
            ics.add_header("Content-Disposition", "attachment", filename=payload.get("ics_name") or "reservation.ics")
            msg.attach(ics)
        for filename, png in images or []:
            image = MIMEImage(png, "png")
            image.add_header("Content-Disposition", "attachment", filename=filename)
            msg.attach(image)
    else:
        msg = body
    msg["From"] = mail_from
    msg["To"] = formataddr((payload.get("to_name") or "", payload["to"]))
    subject = str(payload["subject"])
    msg["Subject"] = subject if subject.isascii() else Header(subject, "utf-8").encode()
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = payload["message_id"]
    msg["Auto-Submitted"] = "auto-generated"
    return msg


@lru_cache(maxsize=1)
def _local_name() -> str:
    """The name said in EHLO, looked up once (smtplib would ask the resolver for every connection)."""
    return socket.getfqdn()


class Mailer:
    """One SMTP connection per batch of messages, opened when the first one needs it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: smtplib.SMTP | None = None

    @property
    def configured(self) -> bool:
        return bool(self.settings.smtp_host)

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        conn: smtplib.SMTP
        if s.smtp_tls:
            conn = smtplib.SMTP_SSL(
                s.smtp_host,
                s.smtp_port,
                local_hostname=_local_name(),
                timeout=s.smtp_timeout_seconds,
                context=ssl.create_default_context(),
            )
        else:
            conn = smtplib.SMTP(s.smtp_host, s.smtp_port, local_hostname=_local_name(), timeout=s.smtp_timeout_seconds)
            if s.smtp_starttls:
                conn.starttls(context=ssl.create_default_context())
        if s.smtp_username:
            conn.login(s.smtp_username, s.smtp_password)
        return conn

    def send(self, payload: dict[str, Any], images: list[tuple[str, bytes]] | None = None) -> None:
        if not self.configured:
            raise RuntimeError("no SMTP server configured (BOOKGATE_SMTP_HOST)")
        msg = build_email(payload, self.settings.mail_from, images)
        if self._conn is None:
            self._conn = self._connect()
        try:
            refused = self._conn.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            raise Refused(f"recipient refused: {exc.recipients}") from exc
        except (smtplib.SMTPServerDisconnected, OSError):
            self.close()
            raise
        if refused:
            raise Refused(f"recipient refused: {refused}")

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                conn.close()


@contextmanager
def mailer(settings: Settings) -> Iterator[Mailer]:
    m = Mailer(settings)
    try:
        yield m
    finally:
        m.close()


# ---------------------------------------------------------------- webhooks


@lru_cache(maxsize=4)
def _fernet(material: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"bookgate webhook secret v1").derive(
        material.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def _material(settings: Settings) -> str:
    return settings.credential_key or settings.effective_secret_key()


def seal(settings: Settings, secret: str) -> str:
    return _fernet(_material(settings)).encrypt(secret.encode()).decode()


def unseal(settings: Settings, token: str) -> str:
    return _fernet(_material(settings)).decrypt(token.encode()).decode()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, now: float | None = None, tolerance: int = TOLERANCE_SECONDS) -> bool:
    """The receiver's side, as documented: constant-time compare, refuse stale timestamps."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        ts = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now or time.time()) - ts) > tolerance:
        return False
    expected = sign(secret, body, ts).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def encode_body(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True, default=str).encode()


def post_webhook(client: httpx.Client, url: str, secret: str, body: dict[str, Any]) -> None:
    raw = encode_body(body)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Bookgate-Webhook/1",
        SIGNATURE_HEADER: sign(secret, raw, int(time.time())),
        "X-Bookgate-Message-Id": str(body.get("id", "")),
    }
    response = client.post(url, content=raw, headers=headers)
    if response.status_code >= 300:
        raise Refused(f"HTTP {response.status_code} from {url}")
