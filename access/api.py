"""HTTP API of access: doors, their current and upcoming grants, people's credentials."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import col, select

from access import events, levels, service
from access.decisions import DecisionIndex
from access.models import Controller, Door
from access.protocol import DoorEvent
from access.supervision import ControllerPublic
from core.db import ident, utcnow
from core.deps import AdminUser, CurrentUser, SessionDep, WriteSessionDep
from core.errors import Forbidden, NotFound
from core.models import Role, User
from core.types import IsoDateTime

router = APIRouter(prefix="/api/v1", tags=["access"])


@router.get("/doors", response_model=list[service.DoorPublic])
def list_doors(principal: CurrentUser, session: SessionDep) -> list[service.DoorPublic]:
    return service.door_public(session, service.visible_doors(session, principal))


@router.get("/doors/{key}", response_model=service.DoorPublic)
def get_door(key: str, principal: CurrentUser, session: SessionDep) -> service.DoorPublic:
    return service.door_public(session, [service.get_door(session, principal, key)])[0]


@router.get("/doors/{key}/grants", response_model=service.DoorGrants)
def door_grants(key: str, principal: CurrentUser, session: SessionDep) -> service.DoorGrants:
    """Current and upcoming grants of the door, from the single desired-state function."""
    return service.door_grants(session, service.get_door(session, principal, key))


@router.get("/users/{user_id}/credentials", response_model=list[service.CredentialPublic])
def list_credentials(user_id: int, principal: CurrentUser, session: SessionDep) -> list[service.CredentialPublic]:
    return [service.credential_public(c) for c in service.list_credentials(session, principal, user_id)]


@router.post(
    "/users/{user_id}/credentials", response_model=service.CredentialPublic, status_code=status.HTTP_201_CREATED
)
def add_credential(
    user_id: int, data: service.CredentialCreate, principal: CurrentUser, session: WriteSessionDep
) -> service.CredentialPublic:
    cred = service.add_credential(session, principal, user_id, data)
    return service.credential_public(cred)


@router.delete("/users/{user_id}/credentials/{credential_id}", response_model=service.CredentialPublic)
def revoke_credential(
    user_id: int, credential_id: int, principal: CurrentUser, session: WriteSessionDep
) -> service.CredentialPublic:
    cred = service.revoke_credential(session, principal, user_id, credential_id)
    return service.credential_public(cred)


@router.put("/me/credentials/{credential_id}/pin", response_model=service.CredentialPublic)
def change_my_pin(
    credential_id: int, data: service.PinChange, principal: CurrentUser, session: WriteSessionDep
) -> service.CredentialPublic:
    """Change the digits of a PIN you hold (issued by reception)."""
    return service.credential_public(service.change_own_pin(session, principal, credential_id, data))


@router.get("/controllers", response_model=list[ControllerPublic])
def list_controllers(principal: CurrentUser, session: SessionDep) -> list[ControllerPublic]:
    """Live state: online, offline, degraded (a failed re-sync or command), with last seen and last sync."""
    if not principal.has_any(Role.venue_manager, Role.reception):
        raise Forbidden("forbidden_role", "controllers are shown to admins, managers and reception")
    doors = service.visible_doors(session, principal)
    ids = {d.controller_id for d in doors}
    rows = session.exec(select(Controller).where(Controller.active).order_by(col(Controller.key))).all()
    return [ControllerPublic.model_validate(c, from_attributes=True) for c in rows if principal.admin or c.id in ids]


@router.get("/access/events", response_model=list[events.EventPublic])
def list_events(
    principal: CurrentUser,
    session: SessionDep,
    door: str | None = None,
    kind: Annotated[list[events.EventKind] | None, Query()] = None,
    user_id: int | None = None,
    source: Annotated[str | None, Query(max_length=40, description="e.g. reservation:42")] = None,
    since: IsoDateTime | None = None,
    until: IsoDateTime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[events.EventPublic]:
    """Door events, newest first, each linked to the reservation or visit that explains it.

    Admins see all; managers and reception the events of the doors they see; residents their own."""
    staff = principal.has_any(Role.venue_manager, Role.reception)
    visible = {ident(d) for d in service.visible_doors(session, principal)} if staff else None
    return events.list_events(
        session,
        principal,
        visible_door_ids=visible,
        door=door,
        kind=list(kind) if kind else None,
        user_id=user_id,
        source=source,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    door: str = Field(min_length=1, max_length=63)
    kind: Literal["badge", "pin", "ble", "key", "qr"] = "badge"
    value: str = Field(min_length=1, max_length=128)
    spelling: Literal["hex", "hex_compact", "decimal"] = Field(
        default="hex",
        description="badges: how the reader wrote the card: hex (two digits per byte), hex_compact (bytes "
        "without leading zeros, as Arduino readers print them) or decimal (Wiegand)",
    )


class DecisionPublic(BaseModel):
    allowed: bool
    reason: str
    source: str | None
    at: datetime
    event_id: int | None


@router.post("/access/decisions", response_model=DecisionPublic)
def decide(data: DecisionRequest, request: Request, principal: AdminUser, session: WriteSessionDep) -> DecisionPublic:
    """An online decision for a reader that asks: may this credential open this door now?

    Answered from the in-memory index (kept in step with the database), logged as a door event,
    and a granted entry checks the reservation in like any other. For controller integrations,
    with an admin API key."""
    index: DecisionIndex = request.app.state.decisions
    index.refresh(session)
    door_id = index.door_by_key(data.door)
    row = session.get(Door, door_id) if door_id is not None else None
    if row is None:
        raise NotFound("door_not_found", f"no door {data.door!r}", field="door")
    now = utcnow()
    value = data.value.strip().replace(":", "").replace(" ", "") if data.kind == "badge" else data.value
    decision = index.decide(ident(row), data.kind, value, now, (data.spelling,))
    ctl = session.get(Controller, row.controller_id)
    event = events.record(
        session,
        DoorEvent(
            ctl.key if ctl is not None else "",
            "granted" if decision.allowed else "denied",
            value,
            row.output,
            now,
            {"reason": decision.reason},
            (data.spelling,),
        ),
        decided_by="gateway",
        credential_kind=data.kind,
        listeners=request.app.state.entry_listeners,
    )
    return DecisionPublic(
        allowed=decision.allowed,
        reason=decision.reason,
        source=decision.source,
        at=now,
        event_id=event.id if event else None,
    )


# ---------------------------------------------------------------- access levels


@router.get("/sites/{site}/access-levels", response_model=list[levels.LevelPublic])
def list_levels(site: str, principal: CurrentUser, session: SessionDep) -> list[levels.LevelPublic]:
    """A site's access levels: admins and the site's reception."""
    return [levels.level_public(session, lv) for lv in levels.list_levels(session, principal, site)]


@router.post("/sites/{site}/access-levels", response_model=levels.LevelPublic, status_code=status.HTTP_201_CREATED)
def create_level(
    site: str, data: levels.LevelCreate, principal: AdminUser, session: WriteSessionDep
) -> levels.LevelPublic:
    """A new level (admins). Overlapping or inverted ranges, or a door of another site: 422."""
    return levels.level_public(session, levels.create_level(session, principal, site, data))


@router.get("/access-levels/{level_id}", response_model=levels.LevelPublic)
def get_level(level_id: int, principal: CurrentUser, session: SessionDep) -> levels.LevelPublic:
    return levels.level_public(session, levels.get_level(session, principal, level_id))


@router.put("/access-levels/{level_id}", response_model=levels.LevelPublic)
def update_level(
    level_id: int, data: levels.LevelIn, principal: AdminUser, session: WriteSessionDep
) -> levels.LevelPublic:
    """Replace a level's doors, schedule and validity (admins); its holders are re-planned."""
    return levels.level_public(session, levels.update_level(session, principal, level_id, data))


@router.delete("/access-levels/{level_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_level(level_id: int, principal: AdminUser, session: WriteSessionDep) -> None:
    """Remove a level (admins): every holder's grants are revoked now."""
    levels.delete_level(session, principal, level_id)


@router.get("/access-levels/{level_id}/holders", response_model=list[levels.HolderPublic])
def list_holders(level_id: int, principal: CurrentUser, session: SessionDep) -> list[levels.HolderPublic]:
    return levels.list_holders(session, principal, level_id)


@router.put("/access-levels/{level_id}/holders/{user_id}", response_model=levels.HolderPublic)
def assign_level(level_id: int, user_id: int, principal: CurrentUser, session: WriteSessionDep) -> levels.HolderPublic:
    """Give a person a level: admins, or the site's reception for the site's people (403 otherwise)."""
    h = levels.assign(session, principal, level_id, user_id)
    user = session.get(User, user_id)
    return levels.HolderPublic(user_id=h.user_id, name=user.name if user else "", origin=h.origin, active=h.active)


@router.delete("/access-levels/{level_id}/holders/{user_id}", response_model=levels.HolderPublic)
def unassign_level(
    level_id: int, user_id: int, principal: CurrentUser, session: WriteSessionDep
) -> levels.HolderPublic:
    """Take a level from a person: revoked at once on every door it opened."""
    h = levels.unassign(session, principal, level_id, user_id)
    user = session.get(User, user_id)
    return levels.HolderPublic(user_id=h.user_id, name=user.name if user else "", origin=h.origin, active=h.active)
