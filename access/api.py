"""HTTP API of access: doors, their current and upcoming grants, people's credentials."""

from __future__ import annotations

from fastapi import APIRouter, status

from access import service
from bookgate.deps import CurrentUser, SessionDep, WriteSessionDep

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
