from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi.security import OAuth2PasswordRequestForm

from core import auth
from core.auth import TokenOut, UserPublic
from core.deps import (
    ClientAddr,
    CurrentUser,
    EngineDep,
    SessionDep,
    SettingsDep,
    WriteSessionDep,
)

router = APIRouter(prefix="/api/v1", tags=["auth"])


@router.post("/auth/token", response_model=TokenOut)
def issue_token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    engine: EngineDep,
    settings: SettingsDep,
    addr: ClientAddr,
) -> TokenOut:
    """OAuth2 password flow: username is the email. Rate limited per account and address."""
    return auth.login(engine, settings, form.username, form.password, addr)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(principal: CurrentUser, session: WriteSessionDep) -> None:
    auth.logout(session, principal)


@router.get("/users/me", response_model=UserPublic, tags=["users"])
def me(principal: CurrentUser, session: SessionDep) -> UserPublic:
    return auth.user_public(session, auth.get_user(session, principal.user_id))
