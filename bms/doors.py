"""Doors a venue manager adds to a reservation (or to every coming occurrence of its series)
beyond the doors of its resource: the party room's booking also opens the service door.

The list is kept by access (`access.levels.store_extra_doors`) and passed to `set_windows` by
`bms.status.sync_access` every time the booking's windows are rewritten, so the added doors follow
its moves and go with its cancellation. A manager may add doors of the venue's site that serve a
resource of a venue they manage, shared entrances, and doors that serve no resource (service
doors, key cabinets); a door serving only other venues' resources, or of another site, is refused.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, col, select

from access.levels import extra_doors, store_extra_doors
from access.models import Door, DoorResource
from bms.context import load_resource_by_id, manages
from bms.models import Reservation, Resource
from bms.queries import get_visible
from bms.status import sync_access
from core import audit
from core.auth import Principal
from core.db import ident, utcnow
from core.errors import Forbidden, Invalid


class ExtraDoorsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    doors: list[str] = Field(max_length=20, description="door keys; an empty list removes the added doors")
    series: bool = Field(default=False, description="every occurrence of the series not over yet")


class ExtraDoorsOut(BaseModel):
    reservations: list[int]
    doors: list[str]


def _door_ids(session: Session, principal: Principal, site_id: int, keys: list[str]) -> list[int]:
    doors = {d.key: d for d in session.exec(select(Door).where(col(Door.key).in_(set(keys)), Door.active)).all()}
    served: dict[int, set[int]] = {}
    if doors:
        for door_id, venue_id in session.exec(
            select(DoorResource.door_id, Resource.venue_id)
            .join(Resource, col(Resource.id) == DoorResource.resource_id)
            .where(col(DoorResource.door_id).in_([ident(d) for d in doors.values()]))
        ).all():
            served.setdefault(door_id, set()).add(venue_id)
    out = []
    for key in keys:
        door = doors.get(key)
        if door is None:
            raise Invalid("door_not_found", f"no door {key!r}", field="doors")
        if door.site_id != site_id:
            raise Invalid("door_of_other_site", f"door {key!r} is at another site", field="doors")
        venues = served.get(ident(door), set())
        if venues and not door.shared and not any(principal.manages_venue(v) for v in venues):
            raise Invalid("door_of_other_venue", f"door {key!r} serves only venues you do not manage", field="doors")
        out.append(ident(door))
    return sorted(set(out))


def set_extra_doors(session: Session, principal: Principal, reservation_id: int, data: ExtraDoorsIn) -> ExtraDoorsOut:
    r, ctx = get_visible(session, principal, reservation_id)  # 404 when not visible
    if not manages(principal, ctx):
        raise Forbidden("not_venue_manager", "only the venue's managers add doors to a booking")
    door_ids = _door_ids(session, principal, ctx.venue.site_id, data.doors)
    targets = [r]
    if data.series and r.series_id is not None:
        targets = list(
            session.exec(
                select(Reservation)
                .where(col(Reservation.series_id) == r.series_id, col(Reservation.end) > utcnow())
                .order_by(col(Reservation.start))
            ).all()
        )
    for target in targets:
        before = extra_doors(session, "reservation", ident(target))
        if store_extra_doors(session, "reservation", ident(target), door_ids):
            sync_access(session, target, load_resource_by_id(session, target.resource_id))
            audit.record(
                session,
                principal.actor,
                "reservation.doors",
                "reservation",
                target.id,
                before={"doors": before},
                after={"doors": door_ids},
            )
    keys = session.exec(select(Door.key).where(col(Door.id).in_(door_ids)).order_by(col(Door.key))).all()
    return ExtraDoorsOut(reservations=[ident(t) for t in targets], doors=list(keys))


def get_extra_doors(session: Session, principal: Principal, reservation_id: int) -> ExtraDoorsOut:
    r, _ctx = get_visible(session, principal, reservation_id)
    ids = extra_doors(session, "reservation", ident(r))
    keys = session.exec(select(Door.key).where(col(Door.id).in_(ids)).order_by(col(Door.key))).all() if ids else []
    return ExtraDoorsOut(reservations=[ident(r)], doors=list(keys))
