"""FastAPI dependencies, in one place: sessions, the current principal, role gates."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import Engine
from sqlmodel import Session

from config import Settings
from core.auth import Principal, resolve_token
from core.db import open_session, write_session
from core.errors import Forbidden, Unauthorized
from core.models import Role

_bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def client_addr(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    with open_session(engine) as session:
        yield session


def get_write_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    """The request's unit of work (BEGIN IMMEDIATE on SQLite): committed when the route returns,
    rolled back when it raises. Its scope is the route call, so the commit happens before the
    response is sent: a client never reads a success that was not stored. Routes never commit."""
    with write_session(engine) as session:
        yield session


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]
WriteSessionDep = Annotated[Session, Depends(get_write_session, scope="function")]
ClientAddr = Annotated[str, Depends(client_addr)]


def get_principal(
    request: Request,
    engine: EngineDep,
    token: Annotated[str | None, Depends(_bearer)],
) -> Principal:
    if not token:
        token = request.cookies.get("bookgate_session")
    if not token:
        raise Unauthorized("not_authenticated", "log in first", headers={"WWW-Authenticate": "Bearer"})
    with open_session(engine) as session:
        return resolve_token(session, token, client_addr(request))


CurrentUser = Annotated[Principal, Depends(get_principal)]


def require_role(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency that lets through admins and holders of any of `roles`."""
    names = ", ".join(r.value for r in roles) or "admin"

    def _gate(principal: CurrentUser) -> Principal:
        if not principal.has_any(*roles):
            raise Forbidden("forbidden_role", f"this needs one of the roles: {names}")
        return principal

    return _gate


AdminUser = Annotated[Principal, Depends(require_role(Role.admin))]
