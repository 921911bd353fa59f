"""Controllers' live state, and the full desired state a controller is re-synced to."""

from __future__ import annotations

import secrets
from datetime import datetime

from pydantic import BaseModel
from sqlmodel import Session, col, select

from access.desired import DoorGrant
from access.models import Controller, Credential, Door, plain_value
from access.protocol import FullSync, Grant
from access.service import state_for_doors
from core.db import ident
from core.models import User


def set_state(session: Session, key: str, state: str, at: datetime, *, synced: bool = False) -> None:
    ctl = session.exec(select(Controller).where(col(Controller.key) == key)).first()
    if ctl is None:
        return
    ctl.state = state
    if state != "offline":
        ctl.last_seen = at
    if synced:
        ctl.last_sync = at
    session.add(ctl)


def full_sync(session: Session, key: str, now: datetime) -> FullSync:
    """Everything the controller should hold now: the grants of its doors still to come or under way."""
    ctl = session.exec(select(Controller).where(col(Controller.key) == key)).one()
    doors = {
        ident(d): d for d in session.exec(select(Door).where(col(Door.controller_id) == ctl.id, Door.active)).all()
    }
    state = state_for_doors(session, list(doors), now)
    cred_ids = {g.credential_id for g in state.grants}
    creds = {c.id: c for c in session.exec(select(Credential).where(col(Credential.id).in_(cred_ids))).all()}
    names = {
        u.id: u.name
        for u in session.exec(select(User).where(col(User.id).in_({c.user_id for c in creds.values()}))).all()
    }
    # A card holds one window on the device: the earliest still to come or under way. Later ones
    # follow when their transitions fall due (revoking the first re-grants the next).
    first: dict[tuple[int, int], DoorGrant] = {}
    for g in state.grants:
        cred = creds[g.credential_id]
        if g.preload and cred.kind == "badge" and g.valid_until > now:
            first.setdefault((g.door_id, g.credential_id), g)
    grants = [
        Grant(
            f"sync-{secrets.token_hex(4)}",
            doors[g.door_id].output,
            plain_value(creds[g.credential_id]),  # decrypted only here, to be sent
            names.get(creds[g.credential_id].user_id, ""),
            g.valid_from,
            g.valid_until,
            credential_format=creds[g.credential_id].format,
        )
        for g in first.values()
    ]
    return FullSync(f"sync-{key}-{secrets.token_hex(4)}", grants)


class ControllerPublic(BaseModel):
    key: str
    name: str
    driver: str
    state: str
    last_seen: datetime | None
    last_sync: datetime | None
