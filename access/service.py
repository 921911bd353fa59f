"""Doors and credentials: who may manage them, and the grants a door should hold."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import column, or_, table
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from access.decisions import note_credential
from access.desired import Cred, DesiredState, Window, desired_state
from access.levels import source_labels
from access.models import SEALED_KINDS, AccessWindow, Controller, Credential, Door, DoorResource, lookup_token, seal
from access.protocol import canonical_card, compact_hex
from access.windows import replan_user
from core import audit
from core.auth import Principal
from core.db import ident, utcnow
from core.errors import Conflict, Invalid, NotFound
from core.models import Role, RoleGrant, User
from core.types import IsoDateTime

CredentialKind = Literal["badge", "pin", "ble", "key", "qr"]
CardFormat = Literal["uid", "em4100", "wiegand"]


# ---------------------------------------------------------------- doors


class DoorPublic(BaseModel):
    key: str
    name: str
    kind: str
    controller: str
    output: int
    shared: bool
    resources: list[int]


def _resources_by_door(session: Session, door_ids: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for link in session.exec(select(DoorResource).where(col(DoorResource.door_id).in_(door_ids))).all():
        out[link.door_id].append(link.resource_id)
    return out


# The booking side's resource table, read by name: access never imports bms.
_resource = table("resource", column("id"), column("venue_id"))


def _venue_of_resources(session: Session, resource_ids: set[int]) -> dict[int, int]:
    if not resource_ids:
        return {}
    rows = session.execute(
        sa_select(_resource.c.id, _resource.c.venue_id).where(_resource.c.id.in_(sorted(resource_ids)))
    ).all()
    return {rid: vid for rid, vid in rows}


def visible_doors(session: Session, principal: Principal) -> list[Door]:
    """Admins: all; reception: their sites' doors; managers: doors serving their venues' resources."""
    doors = list(session.exec(select(Door).where(Door.active).order_by(col(Door.key))).all())
    if principal.admin:
        return doors
    links = _resources_by_door(session, [ident(d) for d in doors])
    venue_of = _venue_of_resources(session, {r for rs in links.values() for r in rs})
    return [
        d
        for d in doors
        if d.site_id in principal.reception_sites
        or any(venue_of.get(r) in principal.managed_venues for r in links.get(ident(d), []))
    ]


def door_public(session: Session, doors: list[Door]) -> list[DoorPublic]:
    links = _resources_by_door(session, [ident(d) for d in doors])
    ctl = {c.id: c.key for c in session.exec(select(Controller)).all()}
    return [
        DoorPublic(
            key=d.key,
            name=d.name,
            kind=d.kind,
            controller=ctl[d.controller_id],
            output=d.output,
            shared=d.shared,
            resources=sorted(links.get(ident(d), [])),
        )
        for d in doors
    ]


def get_door(session: Session, principal: Principal, key: str) -> Door:
    for d in visible_doors(session, principal):
        if d.key == key:
            return d
    raise NotFound("door_not_found", f"no door {key!r}")


def state_for_doors(
    session: Session, door_ids: list[int], since: datetime, *, user_ids: set[int] | None = None
) -> DesiredState:
    """The desired state of some doors from every window that has not ended by `since`
    (only `user_ids`' windows when given: the dispatcher needs only the people it is serving)."""
    links = list(session.exec(select(DoorResource).where(col(DoorResource.door_id).in_(door_ids))).all())
    doors_of: dict[int, list[int]] = defaultdict(list)
    for link in links:
        doors_of[link.resource_id].append(link.door_id)
    # windows on a resource these doors serve, and windows on one of these doors (levels, added doors)
    stmt = select(AccessWindow).where(
        or_(col(AccessWindow.resource_id).in_(list(doors_of)), col(AccessWindow.door_id).in_(door_ids)),
        col(AccessWindow.end) > since,
    )
    if user_ids is not None:
        stmt = stmt.where(col(AccessWindow.user_id).in_(user_ids))
    windows = session.exec(stmt).all()
    users = {w.user_id for w in windows}
    creds = session.exec(
        select(Credential).where(col(Credential.user_id).in_(users), col(Credential.revoked_at).is_(None))
    ).all()
    wanted = set(door_ids)
    return desired_state(
        [
            Window(
                w.user_id,
                w.resource_id,
                w.start,
                w.end,
                w.mode,
                f"{w.source_type}:{w.source_id}",
                w.door_id if w.door_id in wanted else None,
            )
            for w in windows
        ],
        doors_of,
        [Cred(ident(c), c.user_id, c.kind, c.value, c.valid_from, c.valid_until) for c in creds],
    )


class GrantPublic(BaseModel):
    credential_id: int
    user_id: int
    kind: str
    valid_from: datetime
    valid_until: datetime
    modes: list[str]
    sources: list[str]


class DoorGrants(BaseModel):
    door: str
    grants: list[GrantPublic]
    hold_open: list[dict]


def door_grants(session: Session, door: Door, now: datetime | None = None) -> DoorGrants:
    now = now or utcnow()
    state = state_for_doors(session, [ident(door)], now)
    wanted = {g.credential_id for g in state.grants}
    creds = {c.id: c for c in session.exec(select(Credential).where(col(Credential.id).in_(wanted))).all()}
    # each grant explained by its sources: reservation:<id>, visit:<id>, level:<level key>
    labels = source_labels(session, {src for g in state.grants for src in g.sources})
    return DoorGrants(
        door=door.key,
        grants=[
            GrantPublic(
                credential_id=g.credential_id,
                user_id=creds[g.credential_id].user_id,
                kind=creds[g.credential_id].kind,
                valid_from=g.valid_from,
                valid_until=g.valid_until,
                modes=sorted(g.modes),
                sources=sorted(labels.get(src, src) for src in g.sources),
            )
            for g in state.grants
            if g.valid_until > now
        ],
        hold_open=[
            {"start": h.start, "end": h.end, "sources": sorted(h.sources)} for h in state.hold_open if h.end > now
        ],
    )


# ---------------------------------------------------------------- credentials


class CredentialCreate(BaseModel):
    """A badge's ``value`` is its card serial in hex, two digits per byte (``04:A1:B2:C3`` or ``04a1b2c3``;
    ``format`` uid, the default, or em4100 for 5-byte 125 kHz tags), or with ``format: wiegand`` the
    decimal number a Wiegand reader reports. It is stored canonically and spelled for each reader."""

    model_config = ConfigDict(extra="forbid")
    kind: CredentialKind
    value: str = Field(min_length=1, max_length=128)
    format: CardFormat | None = Field(default=None, description="badges only: uid (default), em4100, wiegand")
    label: str = Field(default="", max_length=100)
    valid_from: IsoDateTime | None = None
    valid_until: IsoDateTime | None = None

    @model_validator(mode="after")
    def _check(self) -> CredentialCreate:
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        if self.kind == "badge":
            self.format = self.format or "uid"
            self.value = canonical_card(self.format, self.value)
        elif self.format is not None:
            raise ValueError("format applies to badges only")
        if self.kind == "pin" and not (self.value.isdigit() and 4 <= len(self.value) <= 8):
            raise ValueError("a PIN is 4 to 8 digits")
        return self


class CredentialPublic(BaseModel):
    id: int
    user_id: int
    kind: str
    format: str = Field(description="badges: uid, em4100 or wiegand; empty for other kinds")
    value: str = Field(description="PINs and BLE keys are masked; badges in their canonical form")
    label: str
    valid_from: datetime | None
    valid_until: datetime | None
    revoked_at: datetime | None


def credential_public(c: Credential) -> CredentialPublic:
    value = "****" if c.kind in SEALED_KINDS else c.value
    return CredentialPublic(
        id=c.id,
        user_id=c.user_id,
        kind=c.kind,
        format=c.format,
        value=value,
        label=c.label,
        valid_from=c.valid_from,
        valid_until=c.valid_until,
        revoked_at=c.revoked_at,
    )


def require_credential_manager(session: Session, principal: Principal, user_id: int) -> User:
    """Admins, or the reception of a site where the person is a resident: credentials are the
    front desk's business. Venue managers see grants on their doors but issue nothing, or one
    venue's manager could hand out badges that open another's doors.

    Anyone else hears the same 404 whether the user exists or not, so an id cannot be probed."""
    user = session.get(User, user_id)
    if user is not None and principal.admin:
        return user
    if user is not None and principal.reception_sites:
        lives = session.exec(
            select(RoleGrant.id).where(
                col(RoleGrant.user_id) == user_id,
                col(RoleGrant.role) == Role.resident.value,
                col(RoleGrant.site_id).in_(principal.reception_sites),
            )
        ).first()
        if lives is not None:
            return user
    raise NotFound("user_not_found", f"no user {user_id}")


def add_credential(session: Session, principal: Principal, user_id: int, data: CredentialCreate) -> Credential:
    require_credential_manager(session, principal, user_id)
    card_format = (data.format or "uid") if data.kind == "badge" else ""
    compact = compact_hex(data.value) if card_format == "uid" else None
    if compact is not None:
        # Readers that drop leading zeros would read both cards as one: whoever holds one opens for the other.
        twin = session.exec(
            select(Credential.id).where(
                col(Credential.kind) == "badge",
                col(Credential.compact) == compact,
                col(Credential.value) != data.value,
                col(Credential.revoked_at).is_(None),
            )
        ).first()
        if twin is not None:
            raise Conflict(
                "credential_ambiguous",
                "some readers would read this card exactly as another registered card "
                f"({compact!r}): it cannot be told apart safely",
                field="value",
            )
    sealed = data.kind in SEALED_KINDS  # PINs and BLE keys: encrypted, found by a keyed hash
    cred = Credential(
        user_id=user_id,
        kind=data.kind,
        format=card_format,
        value=lookup_token(data.kind, data.value),
        secret=seal(data.value) if sealed else None,
        compact=compact,
        label=data.label,
        valid_from=data.valid_from,
        valid_until=data.valid_until,
    )
    try:
        with session.begin_nested():
            session.add(cred)
            session.flush()
    except IntegrityError:
        raise Conflict("credential_taken", f"this {data.kind} is already registered", field="value") from None
    note_credential(session, ident(cred))
    replan_user(session, user_id, utcnow())  # a new badge joins the person's current and coming grants
    audit.record(
        session,
        principal.actor,
        "credential.add",
        "credential",
        cred.id,
        after={"user_id": user_id, "kind": data.kind, "format": card_format, "label": data.label},
    )
    return cred


def revoke_credential(session: Session, principal: Principal, user_id: int, credential_id: int) -> Credential:
    require_credential_manager(session, principal, user_id)
    cred = session.get(Credential, credential_id)
    if cred is None or cred.user_id != user_id:
        raise NotFound("credential_not_found", f"no credential {credential_id} for user {user_id}")
    if cred.revoked_at is not None:
        raise Invalid("already_revoked", "this credential is already revoked", status=409)
    cred.revoked_at = utcnow()
    session.add(cred)
    session.flush()
    note_credential(session, ident(cred))
    replan_user(session, user_id, cred.revoked_at)  # taken off the controllers now, not at release
    audit.record(session, principal.actor, "credential.revoke", "credential", cred.id, user_id=user_id)
    return cred


class PinChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pin: str = Field(min_length=4, max_length=8, pattern=r"^[0-9]+$", description="4 to 8 digits")


def change_own_pin(session: Session, principal: Principal, credential_id: int, data: PinChange) -> Credential:
    """A person changes the PIN they hold (reception issues and revokes; the owner alone may choose
    its digits). Another person's credential, or one that is not a PIN, is the same 404."""
    cred = session.get(Credential, credential_id)
    if cred is None or cred.user_id != principal.user_id or cred.kind != "pin":
        raise NotFound("credential_not_found", f"no PIN {credential_id} of yours")
    if cred.revoked_at is not None:
        raise Invalid("already_revoked", "this PIN is revoked", status=409)
    cred.value = lookup_token("pin", data.pin)
    cred.secret = seal(data.pin)
    try:
        with session.begin_nested():
            session.add(cred)
            session.flush()
    except IntegrityError:
        raise Conflict("credential_taken", "choose other digits", field="pin") from None
    note_credential(session, ident(cred))  # the online decisions follow at once
    replan_user(session, principal.user_id, utcnow())
    audit.record(session, principal.actor, "credential.pin_change", "credential", cred.id, user_id=principal.user_id)
    return cred


def list_credentials(session: Session, principal: Principal, user_id: int) -> list[Credential]:
    require_credential_manager(session, principal, user_id)
    return list(
        session.exec(select(Credential).where(col(Credential.user_id) == user_id).order_by(col(Credential.id))).all()
    )
