"""People, roles, sessions and API keys: the service layer behind /auth, /users and /api-keys."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import Engine, String, bindparam, func, or_, text
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, delete, select, update

from config import Settings
from core import audit
from core.audit import Actor
from core.db import UTCDateTime, ident, is_sqlite, read_session, utcnow, write_session
from core.errors import AppError, Conflict, Invalid, NotFound, Unauthorized
from core.models import (
    ApiKey,
    AuthSession,
    LoginAttempt,
    Role,
    RoleGrant,
    Site,
    User,
    Venue,
)
from core.security import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    PasswordHashing,
    WeakPassword,
    check_password,
    hashing_for,
    new_token,
    token_hash,
)

# ---------------------------------------------------------------- principals


@dataclass(frozen=True)
class Principal:
    """The authenticated caller and the scopes of their roles, loaded once per request."""

    user_id: int
    email: str
    name: str
    locale: str | None  # the language the user chose; None while they never chose one
    admin: bool = False
    managed_venues: frozenset[int] = field(default_factory=frozenset)
    reception_sites: frozenset[int] = field(default_factory=frozenset)
    resident_sites: frozenset[int] = field(default_factory=frozenset)
    session_id: int | None = None
    api_key_id: int | None = None
    client_addr: str | None = None

    @property
    def roles(self) -> set[str]:
        roles = set()
        if self.admin:
            roles.add(Role.admin.value)
        if self.managed_venues:
            roles.add(Role.venue_manager.value)
        if self.reception_sites:
            roles.add(Role.reception.value)
        if self.resident_sites:
            roles.add(Role.resident.value)
        return roles

    def has_any(self, *roles: Role | str) -> bool:
        return self.admin or any(str(r) in self.roles for r in roles)

    def manages_venue(self, venue_id: int) -> bool:
        return self.admin or venue_id in self.managed_venues

    def at_reception(self, site_id: int) -> bool:
        return self.admin or site_id in self.reception_sites

    @property
    def actor(self) -> Actor:
        label = self.email if self.api_key_id is None else f"{self.email} (api key {self.api_key_id})"
        return Actor(id=self.user_id, label=label, client_addr=self.client_addr)


def _principal(
    user_id: int,
    email: str,
    name: str,
    locale: str | None,
    grants: list[tuple[str, int | None, int | None]],
    **ids: Any,
) -> Principal:
    """A principal from a user's columns and their role grants as (role, site_id, venue_id)."""
    return Principal(
        user_id=user_id,
        email=email,
        name=name,
        locale=locale,
        admin=any(role == Role.admin for role, _, _ in grants),
        managed_venues=frozenset(v for role, _, v in grants if role == Role.venue_manager and v),
        reception_sites=frozenset(s for role, s, _ in grants if role == Role.reception and s),
        resident_sites=frozenset(s for role, s, _ in grants if role == Role.resident and s),
        **ids,
    )


def load_principal(
    session: Session,
    user: User,
    *,
    session_id: int | None = None,
    api_key_id: int | None = None,
    client_addr: str | None = None,
) -> Principal:
    grants = session.exec(
        select(RoleGrant.role, RoleGrant.site_id, RoleGrant.venue_id).where(col(RoleGrant.user_id) == user.id)
    ).all()
    return _principal(
        ident(user),
        user.email,
        user.name,
        user.locale if user.locale_chosen else None,
        [tuple(g) for g in grants],  # type: ignore[misc]
        session_id=session_id,
        api_key_id=api_key_id,
        client_addr=client_addr,
    )


def _token_query(holder: type[AuthSession] | type[ApiKey]) -> Any:
    """The live session or key with this digest, its active user and the user's role grants
    (a row per grant); built once, with the digest and the time bound per call."""
    digest, now = bindparam("digest", type_=String()), bindparam("now", type_=UTCDateTime())
    if holder is AuthSession:
        found, live = col(AuthSession.token_hash) == digest, col(AuthSession.expires_at) > now
    else:
        found = col(ApiKey.key_hash) == digest
        live = or_(col(ApiKey.expires_at).is_(None), col(ApiKey.expires_at) > now)
    return (
        sa_select(
            col(holder.id),
            col(User.id),
            col(User.email),
            col(User.name),
            col(User.locale),
            col(User.locale_chosen),
            col(RoleGrant.role),
            col(RoleGrant.site_id),
            col(RoleGrant.venue_id),
        )
        .join(User, col(User.id) == col(holder.user_id))
        .outerjoin(RoleGrant, col(RoleGrant.user_id) == col(User.id))
        .where(found, col(holder.revoked_at).is_(None), live, col(User.is_active))
    )


_TOKEN_QUERIES: dict[str, tuple[type[AuthSession] | type[ApiKey], Any]] = {
    "bgs_": (AuthSession, _token_query(AuthSession)),
    "bgk_": (ApiKey, _token_query(ApiKey)),
}


def resolve_token(session: Session, token: str, client_addr: str | None = None) -> Principal:
    """A bearer token (session or API key) to its principal, or 401.

    One statement on every authenticated request, built once (`_token_query`): the live session
    or key, its active user and the user's role grants, joined (a row per grant)."""
    holder: type[AuthSession] | type[ApiKey] | None = None
    rows: list[Any] = []
    known = _TOKEN_QUERIES.get(token[:4])
    if known is not None:
        holder, query = known
        rows = list(session.connection().execute(query, {"digest": token_hash(token), "now": utcnow()}))
    if not rows:
        raise Unauthorized(
            "invalid_token",
            "the token is unknown, expired or revoked",
            headers={"WWW-Authenticate": "Bearer"},
        )
    held_by, user_id, email, name, locale, chosen = rows[0][:6]
    return _principal(
        user_id,
        email,
        name,
        locale if chosen else None,
        [(r[6], r[7], r[8]) for r in rows if r[6] is not None],
        session_id=held_by if holder is AuthSession else None,
        api_key_id=held_by if holder is ApiKey else None,
        client_addr=client_addr,
    )


# ---------------------------------------------------------------- login


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_at: datetime


def _normal_email(email: str) -> str:
    return email.strip().lower()


def _failures(s: Session, *where: Any) -> int:
    return int(s.exec(select(func.count()).select_from(LoginAttempt).where(*where)).one())


def _throttled_by(s: Session, settings: Settings, email: str, client_addr: str, since: datetime) -> str | None:
    """Which limit a new attempt would pass, if any. Failures are counted per (account, address)
    first, so one address guessing cannot lock the owner out from another; the per-account ceiling
    (much higher) bounds a guessing spread over many addresses, and the per-address one bounds an
    address spraying many accounts (OWASP Authentication Cheat Sheet, "Login Throttling")."""
    recent = col(LoginAttempt.at) > since
    same_account, same_address = col(LoginAttempt.email) == email, col(LoginAttempt.client_addr) == client_addr
    if _failures(s, same_account, same_address, recent) >= settings.login_max_failures_per_account_address:
        return "account_address"
    if _failures(s, same_account, recent) >= settings.login_max_failures_per_account:
        return "account"
    if _failures(s, same_address, recent) >= settings.login_max_failures_per_address:
        return "address"
    return None


def _serialize_attempts(s: Session, email: str, client_addr: str) -> None:
    """Make count-then-insert atomic per account and per address. SQLite: write transactions are
    already serialized by the writer lock. PostgreSQL: transaction-scoped advisory locks on the
    account and on the address (always in that order, so two attempts cannot deadlock)."""
    if is_sqlite(s):
        return
    for key in (f"login:{email}", f"login-addr:{client_addr}"):
        lock_id = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_id})


def login(engine: Engine, settings: Settings, email: str, password: str, client_addr: str) -> TokenOut:
    """Check the rate limits, then the password; every failure is counted and audited.

    The Argon2id verification (tens to hundreds of milliseconds, by design) runs outside any write
    transaction, so failed logins never hold the database's writer lock (SQLite) while hashing. It
    is framed by two short write transactions: the first checks the limits and counts the attempt
    as a failure in advance (so concurrent guesses cannot all pass the check before any of them is
    counted), the second records the outcome: a failure keeps that row and is audited, a success
    removes this (account, address)'s failures and opens the session."""
    email = _normal_email(email)
    now = utcnow()
    window_start = now - timedelta(seconds=settings.login_window_seconds)
    with write_session(engine) as s:
        _serialize_attempts(s, email, client_addr)
        limit = _throttled_by(s, settings, email, client_addr, window_start)
        if limit is not None:
            audit.record(s, Actor(None, email, client_addr), "auth.login_throttled", "user", email, limit=limit)
            raise AppError(
                "too_many_attempts",
                "too many failed logins; try again later",
                status=429,
                headers={"Retry-After": str(settings.login_window_seconds)},
                keep=True,  # the throttling is audited, not rolled back with the refusal
            )
        s.add(LoginAttempt(email=email, client_addr=client_addr, at=now))
    with read_session(engine) as s:
        found = s.exec(select(User).where(col(User.email) == email)).first()
    hashing = hashing_for(settings)
    stored_hash = found.password_hash if found else None
    ok = hashing.verify(stored_hash, password)  # outside any transaction
    new_hash = hashing.hash(password) if ok and stored_hash and hashing.needs_rehash(stored_hash) else None
    with write_session(engine) as s:
        user = s.exec(select(User).where(col(User.email) == email)).first()
        # the account may have changed while the password was being checked: the check stands
        # only for the hash it was made against, on an account still active
        if not ok or user is None or not user.is_active or user.password_hash != stored_hash:
            reason = "disabled" if ok and user is not None and not user.is_active else "bad_credentials"
            audit.record(s, Actor(None, email, client_addr), "auth.login_failed", "user", email, reason=reason)
            raise Unauthorized(  # keep=True: the failure stays counted, not rolled back with the refusal
                "bad_credentials",
                "wrong email or password, or the account is disabled",
                headers={"WWW-Authenticate": "Bearer"},
                keep=True,
            )
        if new_hash is not None:
            user.password_hash = new_hash
        # this attempt and the earlier failures of this account from this address; failures from
        # other addresses still count towards the account's ceiling
        s.exec(
            delete(LoginAttempt).where(col(LoginAttempt.email) == email, col(LoginAttempt.client_addr) == client_addr)
        )
        token = new_token("bgs")
        expires = utcnow() + timedelta(minutes=settings.session_ttl_minutes)
        s.add(
            AuthSession(user_id=ident(user), token_hash=token_hash(token), expires_at=expires, client_addr=client_addr)
        )
        audit.record(s, Actor(user.id, user.email, client_addr), "auth.login", "user", user.id)
        return TokenOut(access_token=token, expires_at=expires)


def logout(session: Session, principal: Principal) -> None:
    if principal.session_id is None:
        raise Invalid("not_a_session", "API keys are revoked with DELETE /api/v1/api-keys/{id}")
    row = session.get(AuthSession, principal.session_id)
    if row and row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(session, principal.actor, "auth.logout", "user", principal.user_id)


def revoke_all_sessions(session: Session, user_id: int) -> int:
    result = session.exec(
        update(AuthSession)
        .where(col(AuthSession.user_id) == user_id, col(AuthSession.revoked_at).is_(None))
        .values(revoked_at=utcnow())
    )
    return result.rowcount or 0


# ---------------------------------------------------------------- users


class RoleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    site: str | None = Field(default=None, description="site key, for resident and reception")
    venue: str | None = Field(default=None, description="venue key, for venue_manager")

    @model_validator(mode="after")
    def _scope(self) -> RoleIn:
        need = {Role.admin: (False, False), Role.venue_manager: (False, True)}.get(self.role, (True, False))
        if bool(self.site) != need[0] or bool(self.venue) != need[1]:
            wanted = {(False, False): "no scope", (False, True): "a venue", (True, False): "a site"}[need]
            raise ValueError(f"role {self.role.value} takes {wanted}")
        return self


def _policy(password: str | None) -> str | None:
    """The password policy (`core.security.check_password`) as a validation error whose code is the
    reason (422: {"field": "password", "code": "password_common", ...})."""
    if password is not None:
        try:
            check_password(password)
        except WeakPassword as exc:
            raise PydanticCustomError(exc.code, exc.message) from None
    return password


Password = Annotated[
    str | None,
    AfterValidator(_policy),
    Field(description=f"{MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters, not a common one"),
]


class UserBase(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    unit: str | None = Field(default=None, max_length=60)
    locale: str = Field(default="en", pattern=r"^(en|fr|de)$")


class UserCreate(UserBase):
    model_config = ConfigDict(extra="forbid")
    email: EmailStr
    password: Password = None
    roles: list[RoleIn] = []


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    unit: str | None = Field(default=None, max_length=60)
    locale: str | None = Field(default=None, pattern=r"^(en|fr|de)$")
    password: Password = None
    is_active: bool | None = None
    roles: list[RoleIn] | None = None


class RolePublic(BaseModel):
    role: str
    site: str | None = None
    venue: str | None = None


class UserPublic(UserBase):
    id: int
    email: str
    locale_chosen: bool = Field(
        default=False, description="false: pages follow the browser, messages the site's language"
    )
    is_active: bool
    roles: list[RolePublic]


def user_public(session: Session, user: User) -> UserPublic:
    rows = session.exec(
        select(RoleGrant, Site.key, Venue.key)
        .join(Site, col(Site.id) == RoleGrant.site_id, isouter=True)
        .join(Venue, col(Venue.id) == RoleGrant.venue_id, isouter=True)
        .where(col(RoleGrant.user_id) == user.id)
        .order_by(col(RoleGrant.id))
    ).all()
    return UserPublic(
        id=user.id,
        email=user.email,
        name=user.name,
        unit=user.unit,
        locale=user.locale,
        locale_chosen=user.locale_chosen,
        is_active=user.is_active,
        roles=[RolePublic(role=g.role, site=sk, venue=vk) for g, sk, vk in rows],
    )


def _set_roles(session: Session, user: User, roles: list[RoleIn]) -> None:
    session.exec(delete(RoleGrant).where(col(RoleGrant.user_id) == ident(user)))
    seen = set()
    for i, r in enumerate(roles):
        site_id = venue_id = None
        if r.site:
            site = session.exec(select(Site).where(col(Site.key) == r.site)).first()
            if site is None:
                raise Invalid("unknown_site", f"no site {r.site!r}", field=f"roles.{i}.site")
            site_id = site.id
        if r.venue:
            venue = session.exec(select(Venue).where(col(Venue.key) == r.venue)).first()
            if venue is None:
                raise Invalid("unknown_venue", f"no venue {r.venue!r}", field=f"roles.{i}.venue")
            venue_id = venue.id
        if (r.role, site_id, venue_id) in seen:
            continue
        seen.add((r.role, site_id, venue_id))
        session.add(RoleGrant(user_id=ident(user), role=r.role.value, site_id=site_id, venue_id=venue_id))
    session.flush()


def create_user(session: Session, actor: Actor, data: UserCreate, hashing: PasswordHashing) -> User:
    email = _normal_email(str(data.email))
    if session.exec(select(User.id).where(col(User.email) == email)).first() is not None:
        raise Conflict("email_taken", "a user with this email exists", field="email")
    user = User(
        email=email,
        name=data.name,
        unit=data.unit,
        locale=data.locale,
        locale_chosen="locale" in data.model_fields_set,
        password_hash=hashing.hash(data.password) if data.password else None,
    )
    session.add(user)
    session.flush()
    _set_roles(session, user, data.roles)
    audit.record(
        session,
        actor,
        "user.create",
        "user",
        user.id,
        after={"email": email, "roles": [r.model_dump(exclude_none=True, mode="json") for r in data.roles]},
    )
    return user


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user_not_found", f"no user {user_id}")
    return user


def update_user(session: Session, actor: Actor, user_id: int, data: UserUpdate, hashing: PasswordHashing) -> User:
    user = get_user(session, user_id)
    changes = data.model_dump(exclude_unset=True, exclude={"password", "roles"})
    before = {k: getattr(user, k) for k in changes}
    for k, v in changes.items():
        if k == "locale":
            user.locale_chosen = v is not None  # null: back to the browser's and the site's language
            if v is None:
                continue
        elif v is None and k in ("name", "is_active"):
            raise Invalid("null_not_allowed", f"{k} cannot be null", field=k)
        setattr(user, k, v)
    revoked = keys_revoked = 0
    if data.password is not None:
        user.password_hash = hashing.hash(data.password)
        changes["password"] = "changed"  # noqa: S105 - audit marker, never the value
        revoked += revoke_all_sessions(session, user_id)
    if data.is_active is False:
        revoked += revoke_all_sessions(session, user_id)
        keys_revoked = (
            session.exec(
                update(ApiKey)
                .where(col(ApiKey.user_id) == user_id, col(ApiKey.revoked_at).is_(None))
                .values(revoked_at=utcnow())
            ).rowcount
            or 0
        )
    if data.roles is not None:
        _set_roles(session, user, data.roles)
        changes["roles"] = [r.model_dump(exclude_none=True, mode="json") for r in data.roles]
    session.add(user)
    audit.record(
        session,
        actor,
        "user.update",
        "user",
        user_id,
        before=before,
        after=changes,
        sessions_revoked=revoked,
        api_keys_revoked=keys_revoked,
    )
    return user


# ---------------------------------------------------------------- API keys


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: int
    name: str = Field(min_length=1, max_length=100)
    expires_at: datetime | None = None


class ApiKeyPublic(BaseModel):
    id: int
    user_id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="shown once; only its hash is kept")


def create_api_key(session: Session, actor: Actor, data: ApiKeyCreate) -> ApiKeyCreated:
    get_user(session, data.user_id)
    if data.expires_at is not None and (data.expires_at.tzinfo is None or data.expires_at <= utcnow()):
        raise Invalid("bad_expiry", "expires_at must be a future time with a UTC offset", field="expires_at")
    token = new_token("bgk")
    row = ApiKey(
        user_id=data.user_id, name=data.name, prefix=token[:10], key_hash=token_hash(token), expires_at=data.expires_at
    )
    session.add(row)
    session.flush()
    audit.record(
        session, actor, "api_key.create", "api_key", row.id, after={"user_id": data.user_id, "name": data.name}
    )
    return ApiKeyCreated(key=token, **row.model_dump(exclude={"key_hash", "last_used_at"}))


def revoke_api_key(session: Session, actor: Actor, key_id: int) -> None:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound("api_key_not_found", f"no API key {key_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(session, actor, "api_key.revoke", "api_key", key_id)
