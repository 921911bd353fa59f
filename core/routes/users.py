from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError
from sqlmodel import col, select

from config.settings import SUPPORTED_LOCALES
from core import auth
from core.auth import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from core.deps import AdminUser, CurrentUser, SessionDep, SettingsDep, WriteSessionDep
from core.models import ApiKey, User
from core.security import hashing_for

router = APIRouter(prefix="/api/v1", tags=["users"])


@router.get("/users", response_model=list[UserPublic])
def list_users(
    _admin: AdminUser,
    session: SessionDep,
    q: Annotated[str | None, Query(max_length=100, description="part of email or name")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[UserPublic]:
    stmt = select(User).order_by(col(User.id)).offset(offset).limit(limit)
    if q:
        like = f"%{q.lower()}%"
        stmt = stmt.where(col(User.email).like(like) | col(User.name).ilike(like))
    return [auth.user_public(session, u) for u in session.exec(stmt).all()]


@router.post("/users", response_model=UserPublic, status_code=status.HTTP_201_CREATED)
def create_user(data: UserCreate, admin: AdminUser, session: WriteSessionDep, settings: SettingsDep) -> UserPublic:
    user = auth.create_user(session, admin.actor, data, hashing_for(settings))
    return auth.user_public(session, user)


@router.get("/users/{user_id:int}", response_model=UserPublic)
def get_user(user_id: int, _admin: AdminUser, session: SessionDep) -> UserPublic:
    return auth.user_public(session, auth.get_user(session, user_id))


@router.patch("/users/{user_id:int}", response_model=UserPublic)
def update_user(
    user_id: int, data: UserUpdate, admin: AdminUser, session: WriteSessionDep, settings: SettingsDep
) -> UserPublic:
    """Disabling a user (is_active=false) revokes all their sessions and API keys at once."""
    user = auth.update_user(session, admin.actor, user_id, data, hashing_for(settings))
    return auth.user_public(session, user)


class MyAccountUpdate(BaseModel):
    """What a user changes on their own account here."""

    model_config = ConfigDict(extra="forbid")
    locale: str | None = Field(
        default=None,
        description=f"one of {', '.join(SUPPORTED_LOCALES)}: the pages and messages in that language; "
        "null: pages follow the browser, messages the site's language",
    )

    @field_validator("locale")
    @classmethod
    def _supported(cls, v: str | None) -> str | None:
        if v is not None and v not in SUPPORTED_LOCALES:
            raise PydanticCustomError(
                "unsupported_locale",
                "unsupported language {lang}; one of {supported}",
                {"lang": repr(v[:20]), "supported": ", ".join(SUPPORTED_LOCALES)},
            )
        return v


@router.patch("/users/me", response_model=UserPublic)
def update_me(
    data: MyAccountUpdate, principal: CurrentUser, session: WriteSessionDep, settings: SettingsDep
) -> UserPublic:
    """The caller's own account: their language (audited like an admin's change)."""
    change = UserUpdate.model_validate(data.model_dump(exclude_unset=True))
    user = auth.update_user(session, principal.actor, principal.user_id, change, hashing_for(settings))
    return auth.user_public(session, user)


@router.get("/api-keys", response_model=list[ApiKeyPublic], tags=["api keys"])
def list_api_keys(_admin: AdminUser, session: SessionDep) -> list[ApiKeyPublic]:
    rows = session.exec(select(ApiKey).order_by(col(ApiKey.id))).all()
    return [ApiKeyPublic(**r.model_dump(exclude={"key_hash", "last_used_at"})) for r in rows]


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED, tags=["api keys"])
def create_api_key(data: ApiKeyCreate, admin: AdminUser, session: WriteSessionDep) -> ApiKeyCreated:
    created = auth.create_api_key(session, admin.actor, data)
    return created


@router.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["api keys"])
def revoke_api_key(key_id: int, admin: AdminUser, session: WriteSessionDep) -> None:
    auth.revoke_api_key(session, admin.actor, key_id)
