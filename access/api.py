"""HTTP API of access: doors, their current and upcoming grants, people's credentials."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlmodel import select

from access import service
from access.models import Controller
from access.supervision import ControllerPublic
from bookgate.deps import CurrentUser, SessionDep, WriteSessionDep
from bookgate.errors import Forbidden
from bookgate.models import Role

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
    session.commit()
    return service.credential_public(cred)


@router.delete("/users/{user_id}/credentials/{credential_id}", response_model=service.CredentialPublic)
def revoke_credential(
    user_id: int, credential_id: int, principal: CurrentUser, session: WriteSessionDep
) -> service.CredentialPublic:
    cred = service.revoke_credential(session, principal, user_id, credential_id)
    session.commit()
    return service.credential_public(cred)


@router.get("/controllers", response_model=list[ControllerPublic])
def list_controllers(principal: CurrentUser, session: SessionDep) -> list[ControllerPublic]:
    """Live state: online, offline, degraded (a failed re-sync or command), with last seen and last sync."""
    if not principal.has_any(Role.venue_manager, Role.reception):
        raise Forbidden("forbidden_role", "controllers are shown to admins, managers and reception")
    doors = service.visible_doors(session, principal)
    ids = {d.controller_id for d in doors}
    rows = session.exec(select(Controller).where(Controller.active).order_by(Controller.key)).all()
    return [ControllerPublic.model_validate(c, from_attributes=True) for c in rows if principal.admin or c.id in ids]
