"""All runtime settings, read from BOOKGATE_* variables (and ./.env); nothing else reads the environment."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, PrivateAttr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SUPPORTED_LOCALES = ("en", "fr", "de")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BOOKGATE_", env_file=".env", extra="ignore", validate_default=True)
    _secret_file_key: str | None = PrivateAttr(default=None)

    var_dir: Path = Field(default=Path("var"), description="Where the SQLite file and the key live")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty = SQLite in var_dir")
    mqtt_url: str = Field(default="", description="mqtt(s)://user:pass@host:port; empty = embedded")
    secret_key: str = Field(default="", description="Empty = generated once into var_dir/secret_key")
    credential_key: str = Field(
        default="",
        description="Key material for PINs and BLE keys at rest (encryption and lookup HMAC); "
        "empty = derived from the secret key. Changing it makes stored PINs and BLE keys unreadable",
    )
    locale: str = "en"
    timezone: str = "UTC"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    session_ttl_minutes: int = Field(default=12 * 60, ge=1)
    argon2_time_cost: int = Field(default=3, ge=1, description="Argon2id passes (RFC 9106 low-memory profile)")
    argon2_memory_kib: int = Field(default=64 * 1024, ge=8, description="Argon2id memory per hash, KiB")
    argon2_parallelism: int = Field(default=4, ge=1, le=64)
    login_window_seconds: int = Field(default=15 * 60, ge=1, description="how long a failed login counts")
    login_max_failures_per_account_address: int = Field(
        default=5, ge=1, description="failed logins per (account, client address) in the window before a 429"
    )
    login_max_failures_per_account: int = Field(
        default=50, ge=1, description="ceiling of failed logins per account from all addresses in the window"
    )
    login_max_failures_per_address: int = Field(
        default=20, ge=1, description="failed logins per client address over all accounts in the window"
    )
    trusted_proxies: str = Field(
        default="",
        description="comma-separated addresses/networks of reverse proxies whose X-Forwarded-For/-Proto "
        "headers are believed ('*' = any); empty = none, the client address is the socket's",
    )

    scheduler: bool = Field(default=True, description="run the periodic jobs (expiries...) in this process")
    expiry_every_seconds: int = Field(default=60, ge=1)
    dispatch_every_seconds: float = Field(
        default=1.0, gt=0, description="safety-net poll for due transitions (each due row also gets an exact wake-up)"
    )
    dispatch_lease_seconds: int = Field(
        default=60, ge=1, description="a claimed transition returns to the pool if its node has not settled it by then"
    )
    dispatch_pipeline: int = Field(
        default=2,
        ge=1,
        le=8,
        description="batches of due transitions in flight at once in a burst: the next is claimed and "
        "computed while the last waits for its acknowledgements (their leases are renewed meanwhile)",
    )
    reconcile_every_seconds: int = Field(
        default=600, ge=5, description="how often controllers' stored cards are read back and repaired"
    )
    decisions_refresh_seconds: float = Field(
        default=0.25, gt=0, description="how often the online-decision index replays the change log"
    )

    smtp_host: str = Field(default="", description="SMTP server for e-mail; empty = no e-mail is sent")
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_starttls: bool = Field(default=False, description="upgrade the connection with STARTTLS")
    smtp_tls: bool = Field(default=False, description="implicit TLS from the first byte (port 465)")
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    mail_from: str = Field(default="Bookgate <bookgate@localhost>", description="From: of every e-mail")
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, description="per webhook request, connect to answer")
    delivery: bool = Field(default=True, description="run the outbox delivery worker in this process")
    delivery_every_seconds: float = Field(default=2.0, gt=0, description="safety-net poll of the outbox")
    delivery_threads: int = Field(default=4, ge=1, le=32, description="sending threads of the delivery worker")
    delivery_gather_seconds: float = Field(
        default=0.05,
        ge=0,
        le=5,
        description="least time between two rounds of one delivery thread: under a stream of commits each "
        "round takes what arrived meanwhile as one batch; an idle worker still starts at once",
    )
    delivery_max_attempts: int = Field(default=8, ge=1, description="a message failing this often is parked")
    delivery_lease_seconds: int = Field(default=120, ge=1, description="a claimed message returns after this")
    reminder_every_seconds: int = Field(default=60, ge=1, description="how often due reminders are looked for")
    mail_catcher_dir: str = Field(default="", description="a Maildir the portal shows to admins (the demo's catcher)")
    public_url: str = Field(default="", description="the portal's address in e-mails and calendar links")

    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=40, ge=0)

    @field_validator("locale")
    @classmethod
    def _locale(cls, v: str) -> str:
        if v not in SUPPORTED_LOCALES:
            raise ValueError(f"unsupported locale {v!r}; one of {', '.join(SUPPORTED_LOCALES)}")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {v!r}") from exc
        return v

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite:///{(self.var_dir / 'core.db').resolve()}"

    def ensure_var_dir(self) -> Path:
        """The var dir, private to the service's user (0700): it holds the database and the keys."""
        self.var_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.var_dir.stat().st_mode & 0o077:
            try:
                os.chmod(self.var_dir, 0o700)  # also tightens a var dir made before this rule
            except PermissionError:
                pass  # not ours to change: the owner decided
        return self.var_dir

    def effective_secret_key(self) -> str:
        """The configured key, or one generated with `secrets` on first use and kept 0600. Read
        once per settings object: the audit chain and the credential keys ask on every write."""
        if self.secret_key:
            return self.secret_key
        if self._secret_file_key is None:
            self._secret_file_key = self._read_or_create_key()
        return self._secret_file_key

    def _read_or_create_key(self) -> str:
        path = self.ensure_var_dir() / "secret_key"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
        return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
