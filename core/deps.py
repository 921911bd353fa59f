"""FastAPI dependencies, in one place: sessions, the current principal, role gates."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import Engine
from sqlmodel import Session

from config import Settings
from core.auth import Principal, resolve_token
from core.db import WriterGate, is_sqlite, open_session, write_admission
from core.errors import AppError, Forbidden, Unauthorized
from core.models import Role

_bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


# Dependencies that only read the request are coroutines: FastAPI runs a plain function's
# dependency on a pool thread, a hand-over to the pool and back (about 100 us of CPU) per
# dependency per request, for a lookup of a few hundred nanoseconds.
async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def peer_host(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def client_addr(request: Request) -> str:
    return peer_host(request)


def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    with open_session(engine) as session:
        yield session


# A request's unit of work holds an admission (SQLite: the process's writer gate; PostgreSQL: one of
# a few slots) from before the route runs until it has committed. Requests queue for it on threads
# of their own (`_GATE_WAITERS`) and end on threads of their own (`_FINISHER`), never in the
# request thread pool: FastAPI validates a sync route's response on a pool thread before the unit
# of work ends, and were every pool thread waiting for the holder (for the gate, or for its row
# locks), the holder could never get one.
_GATE_WAITERS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="write-queue")
_FINISHER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="unit-of-work")
GATE_TIMEOUT = 30.0


def _finish(session: Session, commit: bool, gate: threading.Semaphore | WriterGate | None) -> None:
    try:
        if commit:
            try:
                session.commit()
            except BaseException:
                session.rollback()
                raise
        else:
            session.rollback()
    finally:
        session.close()
        if gate is not None:
            gate.release()


def _admitted_session(engine: Engine, gate: threading.Semaphore | WriterGate | None) -> Session:
    """The write session of a unit of work whose admission `gate` is held (released if opening fails)."""
    try:
        return open_session(engine, write=True, gate_held=gate is not None and is_sqlite(engine))
    except BaseException:
        if gate is not None:
            gate.release()
        raise


def _busy() -> AppError:
    return AppError("busy", "the database is busy with other writes; try again", status=503)


async def get_write_session(engine: Annotated[Engine, Depends(get_engine)]) -> AsyncIterator[Session]:
    """The request's unit of work: committed when the route returns, rolled back when it raises
    (unless the refusal says ``keep``). Its scope is the route call, so the commit happens before
    the response is sent: a client never reads a success that was not stored. Routes never commit."""
    loop = asyncio.get_running_loop()
    gate = write_admission(engine)
    if gate is not None and not await loop.run_in_executor(_GATE_WAITERS, gate.acquire, True, GATE_TIMEOUT):
        raise _busy()
    session = _admitted_session(engine, gate)
    commit = True
    try:
        yield session
    except BaseException as exc:
        commit = getattr(exc, "keep", False) is True
        raise
    finally:
        # shielded: a cancelled request still ends its transaction and hands the admission on
        await asyncio.shield(loop.run_in_executor(_FINISHER, _finish, session, commit, gate))


T = TypeVar("T")


def _whole_unit(engine: Engine, work: Callable[[Session], T]) -> T:
    gate = write_admission(engine)
    if gate is not None and not gate.acquire(True, GATE_TIMEOUT):
        raise _busy()
    session = _admitted_session(engine, gate)
    commit = True
    try:
        return work(session)
    except BaseException as exc:
        commit = getattr(exc, "keep", False) is True
        raise
    finally:
        _finish(session, commit, gate)


async def run_unit(engine: Engine, work: Callable[[Session], T]) -> T:
    """`work` as the request's unit of work, the same as a route with `WriteSessionDep` (committed
    before the response, rolled back when it raises unless the refusal says ``keep``), but run
    whole on one thread of the write queue: admission, work, commit and hand-over, with no turn of
    the event loop while the admission is held. With the dependency, the admission is held across
    four hand-overs between threads and the loop (the route, its response's validation, the
    commit), each waiting behind whatever else the loop has to do. For the hottest write route (a
    booking: under load on SQLite, its hold on the writer gate is the server's limit); the route
    is a coroutine, so its response is validated on the loop after the unit has ended. A
    cancelled request's unit still runs to its end. Nothing in `work` may wait for the event loop."""
    return await asyncio.get_running_loop().run_in_executor(_GATE_WAITERS, _whole_unit, engine, work)


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]
WriteSessionDep = Annotated[Session, Depends(get_write_session, scope="function")]
ClientAddr = Annotated[str, Depends(client_addr)]


SESSION_COOKIE = "bookgate_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def same_origin(request: Request) -> bool | None:
    """Whether the browser says the request comes from this very host: by its ``Origin`` header,
    else its ``Referer``, else its ``Sec-Fetch-Site``; None when it says nothing at all."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin:
        return origin != "null" and urlsplit(origin).netloc == request.url.netloc
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site:
        return fetch_site == "same-origin"
    return None


def check_cookie_origin(request: Request) -> None:
    """Refuse a state-changing request (POST, PUT, PATCH, DELETE...) authenticated by the portal's
    session cookie unless it demonstrably comes from this host: 403 ``bad_origin``.

    SameSite=Lax already keeps the cookie off most cross-site requests, but not off those from a
    sibling subdomain (same site, other origin) nor off old browsers. A request whose Origin,
    Referer and Sec-Fetch-Site are all absent is refused too: every browser that sends cookies on an
    unsafe request sends at least one of them (Origin on every cross-origin and every POST since
    2020, Sec-Fetch-Site in all current engines), so only a non-browser client would send none, and
    such a client has no reason to use the cookie: it uses the bearer header, which this check does
    not concern (a bearer token is never sent by a browser on its own)."""
    if request.method in SAFE_METHODS:
        return
    if not same_origin(request):
        raise Forbidden(
            "bad_origin", "a request authenticated by the session cookie must come from this site's own pages"
        )


def get_principal(
    request: Request,
    engine: EngineDep,
    token: Annotated[str | None, Depends(_bearer)],
) -> Principal:
    """The caller, from the bearer header, else the portal's session cookie (whose unsafe requests
    must come from this site: `check_cookie_origin`)."""
    if not token:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            check_cookie_origin(request)
    if not token:
        raise Unauthorized("not_authenticated", "log in first", headers={"WWW-Authenticate": "Bearer"})
    with open_session(engine) as session:
        return resolve_token(session, token, peer_host(request))


CurrentUser = Annotated[Principal, Depends(get_principal)]


def require_role(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets through admins and holders of any of `roles`."""
    names = ", ".join(r.value for r in roles) or "admin"

    async def _gate(principal: CurrentUser) -> Principal:
        if not principal.has_any(*roles):
            raise Forbidden("forbidden_role", f"this needs one of the roles: {names}")
        return principal

    return _gate


AdminUser = Annotated[Principal, Depends(require_role(Role.admin))]


# ---------------------------------------------------------------- response headers

API_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


class SecurityHeaders:
    """Pure ASGI middleware: every response says ``X-Content-Type-Options: nosniff`` and
    ``Referrer-Policy: same-origin`` unless the route set them itself. The portal's pages add their
    Content-Security-Policy in `portal.layout.render` (the API docs page needs its own scripts)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in API_SECURITY_HEADERS if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
