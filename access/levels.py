"""Access levels: standing access to a site's doors on a weekly schedule, held by people.

A level is expanded (`access.desired.level_intervals`, in the site's zone) over a bounded horizon
into door windows, one source per holder (`level:<holder id>`), so transitions, esp-rfid validity
windows, the decision index, re-sync and reconcile all follow from the windows as for a booking.
A level open day and night is one window from `ALWAYS_START` to its end of validity (or
`OPEN_END`): it never needs re-planning. Scheduled levels are re-expanded by `replan_levels`,
which the clock runs every few minutes (`schedules.clock`): the horizon moves on a local day
boundary, so an unchanged level writes nothing. The same run hands a level to everyone holding
one of its roles at its site and takes it from those who lost the role.

Extra doors (`ExtraDoor`): doors a manager adds to one source (a reservation), passed by the
booking side to `set_windows` whenever it rewrites that source.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from access.desired import WEEKDAYS, Holding, Level, ScheduleError, level_intervals, parse_schedule
from access.models import AccessLevel, AccessLevelDoor, AccessLevelHolder, AccessWindow, Door, ExtraDoor
from access.windows import Row, replace_sources, set_source_windows
from core import audit
from core.auth import Principal
from core.db import ident, utcnow, write_session
from core.errors import Conflict, Forbidden, Invalid, NotFound
from core.models import Role, RoleGrant, Site, User, Venue

HORIZON_DAYS = 14
LEVELS_EVERY_MINUTES = 5  # the clock's re-planning: the horizon's daily step, new residents, lost roles
SOURCE = "level"
LEVEL_ROLES = ("resident", "reception", "venue_manager")
_CHUNK = 500


# ---------------------------------------------------------------- expansion and writing


def horizon(zone: str, now: datetime) -> tuple[datetime, datetime]:
    """From the local start of yesterday to the local start of the day after the horizon: it moves
    once a day, so re-planning in between finds nothing to change."""
    tz = ZoneInfo(zone)
    today = now.astimezone(tz).date()
    lo = datetime.combine(today - timedelta(days=1), time(0), tz)
    hi = datetime.combine(today + timedelta(days=HORIZON_DAYS + 1), time(0), tz)
    return lo, hi


def level_spec(level: AccessLevel, door_ids: Sequence[int], zone: str) -> Level:
    return Level(
        door_ids=tuple(sorted(door_ids)),
        schedule={k: list(v) for k, v in level.schedule.items()},
        zone=zone,
        exceptions=frozenset(date.fromisoformat(d) for d in level.exceptions),
        valid_from=level.valid_from,
        valid_until=level.valid_until,
        mode=level.mode,
    )


def _doors_of(session: Session, level_id: int) -> list[int]:
    return list(
        session.exec(
            select(AccessLevelDoor.door_id)
            .join(Door, col(Door.id) == AccessLevelDoor.door_id)
            .where(col(AccessLevelDoor.level_id) == level_id, Door.active)
        ).all()
    )


def level_doors(session: Session, level_id: int) -> list[int]:
    """The level's active doors: what a visit that carries a level passes as `door_ids`."""
    return _doors_of(session, level_id)


def holdings(session: Session, site_id: int | None = None) -> list[Holding]:
    """Every active holding (of one site's levels when given), as the pure definition takes them."""
    stmt = select(AccessLevel, Site.timezone).join(Site, col(Site.id) == AccessLevel.site_id)
    if site_id is not None:
        stmt = stmt.where(col(AccessLevel.site_id) == site_id)
    out = []
    for level, zone in session.exec(stmt).all():
        spec = level_spec(level, _doors_of(session, ident(level)), zone)
        for h in session.exec(
            select(AccessLevelHolder).where(col(AccessLevelHolder.level_id) == level.id, AccessLevelHolder.active)
        ).all():
            out.append(Holding(h.user_id, spec, f"{SOURCE}:{h.id}"))
    return out


def _existing(session: Session, holder_ids: list[int]) -> dict[int, set[Row]]:
    out: dict[int, set[Row]] = defaultdict(set)
    for i in range(0, len(holder_ids), _CHUNK):
        for w in session.exec(
            select(AccessWindow).where(
                col(AccessWindow.source_type) == SOURCE, col(AccessWindow.source_id).in_(holder_ids[i : i + _CHUNK])
            )
        ).all():
            out[w.source_id].add((w.user_id, w.resource_id, w.door_id, w.start, w.end, w.mode))
    return out


def write_level(session: Session, level: AccessLevel, now: datetime) -> int:
    """Bring the windows of every holder of `level` to what it opens now; returns how many holders
    changed. Only they are re-planned: a level that changed touches its own holders, nobody else."""
    zone = session.exec(select(Site.timezone).where(col(Site.id) == level.site_id)).one()
    doors = _doors_of(session, ident(level))
    spec = level_spec(level, doors, zone)
    intervals = level_intervals(spec, *horizon(zone, now))
    holders = list(session.exec(select(AccessLevelHolder).where(col(AccessLevelHolder.level_id) == level.id)).all())
    have = _existing(session, [ident(h) for h in holders])
    changed: dict[int, set[Row]] = {}
    for h in holders:
        wanted: set[Row] = (
            {(h.user_id, None, door, lo, hi, level.mode) for lo, hi in intervals for door in spec.door_ids}
            if h.active
            else set()
        )
        if wanted != have.get(ident(h), set()):
            changed[ident(h)] = wanted
    if changed:
        replace_sources(session, SOURCE, changed)
    return len(changed)


def _role_members(session: Session, site_id: int, roles: Iterable[str]) -> set[int]:
    roles = set(roles)
    members: set[int] = set()
    site_roles = sorted(roles & {Role.resident.value, Role.reception.value})
    if site_roles:
        members |= set(
            session.exec(
                select(RoleGrant.user_id).where(col(RoleGrant.role).in_(site_roles), col(RoleGrant.site_id) == site_id)
            ).all()
        )
    if Role.venue_manager.value in roles:
        venues = select(Venue.id).where(col(Venue.site_id) == site_id)
        members |= set(
            session.exec(
                select(RoleGrant.user_id).where(
                    col(RoleGrant.role) == Role.venue_manager.value, col(RoleGrant.venue_id).in_(venues)
                )
            ).all()
        )
    return members


def sync_role_holders(session: Session, level: AccessLevel) -> int:
    """Everyone with one of the level's roles at its site holds it (unless an admin took it away:
    an inactive row stays); a role's holder who lost the role loses the level. Returns the changes."""
    members = _role_members(session, level.site_id, level.roles)
    rows = {
        h.user_id: h
        for h in session.exec(select(AccessLevelHolder).where(col(AccessLevelHolder.level_id) == level.id)).all()
    }
    changes = 0
    for uid in sorted(members - set(rows)):
        session.add(AccessLevelHolder(level_id=ident(level), user_id=uid, origin="role"))
        changes += 1
    for uid, h in rows.items():
        if h.origin == "role" and uid not in members:
            if h.active:
                set_source_windows(session, SOURCE, ident(h), [])
            session.delete(h)
            changes += 1
    session.flush()
    return changes


def sync_levels(session: Session, now: datetime, site_id: int | None = None) -> int:
    """Role holders and windows of every level (of one site): the periodic job and the site import."""
    stmt = select(AccessLevel).order_by(col(AccessLevel.id))
    if site_id is not None:
        stmt = stmt.where(col(AccessLevel.site_id) == site_id)
    changed = 0
    for level in session.exec(stmt).all():
        changed += sync_role_holders(session, level)
        changed += write_level(session, level, now)
    return changed


def replan_levels(engine: Engine, now: datetime | None = None) -> int:
    """The clock's job (`schedules.clock`, every `LEVELS_EVERY_MINUTES`): one transaction."""
    with write_session(engine) as s:
        return sync_levels(s, now or utcnow())


# ---------------------------------------------------------------- extra doors of a source


def extra_doors(session: Session, source_type: str, source_id: int) -> list[int]:
    return sorted(
        session.exec(
            select(ExtraDoor.door_id).where(
                col(ExtraDoor.source_type) == source_type, col(ExtraDoor.source_id) == source_id
            )
        ).all()
    )


def store_extra_doors(session: Session, source_type: str, source_id: int, door_ids: Iterable[int]) -> bool:
    """Replace the doors added to a source; the caller then rewrites its windows (`set_windows`
    with `door_ids=extra_doors(...)`). Returns whether the list changed."""
    wanted = set(door_ids)
    have = set(extra_doors(session, source_type, source_id))
    for door in have - wanted:
        row = session.get(ExtraDoor, (source_type, source_id, door))
        if row is not None:
            session.delete(row)
    for door in sorted(wanted - have):
        session.add(ExtraDoor(source_type=source_type, source_id=source_id, door_id=door))
    session.flush()
    return wanted != have


# ---------------------------------------------------------------- the admin API's service

FIRST_DAY, LAST_DAY = date(2000, 1, 2), date(2099, 12, 30)  # within ALWAYS_START..OPEN_END
LevelRole = Literal["resident", "reception", "venue_manager"]
LevelMode = Literal["badge", "authorized", "badge+authorized"]


class LevelIn(BaseModel):
    """`schedule` maps mon..sun to local ranges ("06:00-09:00", "00:00-24:00"), or is "always"."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    doors: list[str] = Field(min_length=1, max_length=500, description="door keys of the level's site")
    schedule: dict[str, list[str]] | Literal["always"] = "always"
    exceptions: list[date] = Field(default=[], max_length=1000, description="local dates it opens nothing")
    roles: list[LevelRole] = Field(default=[], description="site roles whose members hold it")
    mode: LevelMode = "badge"
    valid_from: date | None = Field(default=None, ge=FIRST_DAY, le=LAST_DAY)
    valid_until: date | None = Field(default=None, ge=FIRST_DAY, le=LAST_DAY, description="the last local day it opens")

    @field_validator("schedule")
    @classmethod
    def _bounded(cls, v: dict[str, list[str]] | str) -> dict[str, list[str]] | str:
        if isinstance(v, dict) and (len(v) > 7 or any(len(r) > 24 for r in v.values())):
            raise ValueError("at most 24 ranges on each of the 7 days")
        return v

    @model_validator(mode="after")
    def _validity(self) -> LevelIn:
        if self.valid_from and self.valid_until and self.valid_until < self.valid_from:
            raise ValueError("valid_until is before valid_from")
        return self

    def weekly(self) -> dict[str, list[str]]:
        if self.schedule == "always":
            return {day: ["00:00-24:00"] for day in WEEKDAYS}
        return {k: list(v) for k, v in self.schedule.items()}


class LevelCreate(LevelIn):
    key: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")


class LevelPublic(BaseModel):
    id: int
    site: str
    key: str
    name: str
    doors: list[str]
    schedule: dict[str, list[str]]
    exceptions: list[str]
    roles: list[str]
    mode: str
    valid_from: date | None
    valid_until: date | None
    holders: int


class HolderPublic(BaseModel):
    user_id: int
    name: str
    origin: str
    active: bool


def level_public(session: Session, level: AccessLevel) -> LevelPublic:
    site_key = session.exec(select(Site.key).where(col(Site.id) == level.site_id)).one()
    doors = session.exec(
        select(Door.key)
        .join(AccessLevelDoor, col(AccessLevelDoor.door_id) == Door.id)
        .where(col(AccessLevelDoor.level_id) == level.id)
        .order_by(col(Door.key))
    ).all()
    holders = session.exec(
        select(AccessLevelHolder.id).where(col(AccessLevelHolder.level_id) == level.id, AccessLevelHolder.active)
    ).all()
    return LevelPublic(
        id=ident(level),
        site=site_key,
        key=level.key,
        name=level.name,
        doors=list(doors),
        schedule=level.schedule,
        exceptions=list(level.exceptions),
        roles=list(level.roles),
        mode=level.mode,
        valid_from=level.valid_from,
        valid_until=level.valid_until,
        holders=len(holders),
    )


def _site(session: Session, key: str) -> Site:
    site = session.exec(select(Site).where(col(Site.key) == key)).first()
    if site is None:
        raise NotFound("site_not_found", f"no site {key!r}")
    return site


def _check_schedule(weekly: dict[str, list[str]]) -> None:
    try:
        parse_schedule(weekly)
    except ScheduleError as exc:
        raise Invalid(exc.reason, str(exc), field="schedule") from None


def _door_ids(session: Session, site_id: int, keys: Sequence[str]) -> list[int]:
    doors = {d.key: d for d in session.exec(select(Door).where(col(Door.key).in_(set(keys)))).all()}
    for key in keys:
        door = doors.get(key)
        if door is None:
            raise Invalid("door_not_found", f"no door {key!r}", field="doors")
        if door.site_id != site_id:
            raise Invalid("door_of_other_site", f"door {key!r} belongs to another site", field="doors")
    return sorted({ident(doors[k]) for k in keys})


def _set_doors(session: Session, level: AccessLevel, door_ids: list[int]) -> None:
    have = set(session.exec(select(AccessLevelDoor.door_id).where(col(AccessLevelDoor.level_id) == level.id)).all())
    for door in have - set(door_ids):
        row = session.get(AccessLevelDoor, (level.id, door))
        if row is not None:
            session.delete(row)
    for door in sorted(set(door_ids) - have):
        session.add(AccessLevelDoor(level_id=ident(level), door_id=door))
    session.flush()


def list_levels(session: Session, principal: Principal, site_key: str) -> list[AccessLevel]:
    """Admins, and the reception of the site (who see who holds what at their desk)."""
    site = _site(session, site_key)
    if not principal.at_reception(ident(site)):
        raise Forbidden("forbidden_role", "access levels are shown to admins and the site's reception")
    return list(
        session.exec(select(AccessLevel).where(col(AccessLevel.site_id) == site.id).order_by(col(AccessLevel.key)))
    )


def get_level(session: Session, principal: Principal, level_id: int) -> AccessLevel:
    level = session.get(AccessLevel, level_id)
    if level is None or not principal.at_reception(level.site_id):
        raise NotFound("level_not_found", f"no access level {level_id}")
    return level


def create_level(session: Session, principal: Principal, site_key: str, data: LevelCreate) -> AccessLevel:
    """Admins only (the route requires it)."""
    site = _site(session, site_key)
    weekly = data.weekly()
    _check_schedule(weekly)
    door_ids = _door_ids(session, ident(site), data.doors)
    taken = session.exec(
        select(AccessLevel.id).where(col(AccessLevel.site_id) == site.id, col(AccessLevel.key) == data.key)
    ).first()
    if taken is not None:
        raise Conflict("level_exists", f"site {site_key!r} already has a level {data.key!r}", field="key")
    level = AccessLevel(
        site_id=ident(site),
        key=data.key,
        name=data.name,
        schedule=weekly,
        exceptions=sorted(d.isoformat() for d in data.exceptions),
        roles=sorted(set(data.roles)),
        mode=data.mode,
        valid_from=data.valid_from,
        valid_until=data.valid_until,
    )
    session.add(level)
    session.flush()
    _set_doors(session, level, door_ids)
    sync_role_holders(session, level)
    write_level(session, level, utcnow())
    audit.record(
        session, principal.actor, "access_level.create", "access_level", level.id, after=_audit_view(level, data.doors)
    )
    return level


def update_level(session: Session, principal: Principal, level_id: int, data: LevelIn) -> AccessLevel:
    level = get_level(session, principal, level_id)
    before = _audit_view(level, level_public(session, level).doors)
    weekly = data.weekly()
    _check_schedule(weekly)
    door_ids = _door_ids(session, level.site_id, data.doors)
    level.name, level.schedule = data.name, weekly
    level.exceptions = sorted(d.isoformat() for d in data.exceptions)
    level.roles, level.mode = sorted(set(data.roles)), data.mode
    level.valid_from, level.valid_until = data.valid_from, data.valid_until
    session.add(level)
    session.flush()
    _set_doors(session, level, door_ids)
    sync_role_holders(session, level)
    write_level(session, level, utcnow())
    audit.record(
        session,
        principal.actor,
        "access_level.update",
        "access_level",
        level.id,
        before=before,
        after=_audit_view(level, data.doors),
    )
    return level


def delete_level(session: Session, principal: Principal, level_id: int) -> None:
    """Every holder's windows go first (revokes due now), then the level."""
    level = get_level(session, principal, level_id)
    view = _audit_view(level, level_public(session, level).doors)
    holders = session.exec(select(AccessLevelHolder).where(col(AccessLevelHolder.level_id) == level.id)).all()
    replace_sources(session, SOURCE, {ident(h): () for h in holders})
    for h in holders:
        session.delete(h)
    session.flush()
    session.delete(level)
    session.flush()
    audit.record(session, principal.actor, "access_level.delete", "access_level", level_id, before=view)


def _audit_view(level: AccessLevel, doors: Sequence[str]) -> dict:
    return {
        "site_id": level.site_id,
        "key": level.key,
        "doors": sorted(doors),
        "schedule": level.schedule,
        "exceptions": level.exceptions,
        "roles": level.roles,
        "mode": level.mode,
        "valid_from": level.valid_from.isoformat() if level.valid_from else None,
        "valid_until": level.valid_until.isoformat() if level.valid_until else None,
    }


def require_assigner(session: Session, principal: Principal, level: AccessLevel, user_id: int) -> User:
    """Admins assign any level; the reception of the level's site assigns its levels to the people
    of that site (residents and reception), nothing else; anyone else is refused (403). A person
    the caller may not see is a 404, whether they exist or not."""
    if not (principal.admin or level.site_id in principal.reception_sites):
        raise Forbidden("assign_not_allowed", "only admins and the site's reception assign access levels")
    user = session.get(User, user_id)
    if user is not None and principal.admin:
        return user
    if user is not None:
        lives = session.exec(
            select(RoleGrant.id).where(
                col(RoleGrant.user_id) == user_id,
                col(RoleGrant.role).in_([Role.resident.value, Role.reception.value]),
                col(RoleGrant.site_id) == level.site_id,
            )
        ).first()
        if lives is not None:
            return user
    raise NotFound("user_not_found", f"no user {user_id}")


def _level_for_assigning(session: Session, level_id: int) -> AccessLevel:
    """Assigning answers 403 to a role that may never assign before it looks at the person."""
    level = session.get(AccessLevel, level_id)
    if level is None:
        raise NotFound("level_not_found", f"no access level {level_id}")
    return level


def list_holders(session: Session, principal: Principal, level_id: int) -> list[HolderPublic]:
    level = get_level(session, principal, level_id)
    rows = session.exec(
        select(AccessLevelHolder, User.name)
        .join(User, col(User.id) == AccessLevelHolder.user_id)
        .where(col(AccessLevelHolder.level_id) == level.id)
        .order_by(col(AccessLevelHolder.user_id))
    ).all()
    return [HolderPublic(user_id=h.user_id, name=name, origin=h.origin, active=h.active) for h, name in rows]


def assign(session: Session, principal: Principal, level_id: int, user_id: int) -> AccessLevelHolder:
    level = _level_for_assigning(session, level_id)
    require_assigner(session, principal, level, user_id)
    holder = session.exec(
        select(AccessLevelHolder).where(
            col(AccessLevelHolder.level_id) == level.id, col(AccessLevelHolder.user_id) == user_id
        )
    ).first()
    if holder is None:
        holder = AccessLevelHolder(level_id=ident(level), user_id=user_id, origin="admin")
    holder.active = True
    session.add(holder)
    session.flush()
    write_level(session, level, utcnow())
    audit.record(
        session, principal.actor, "access_level.assign", "access_level", level.id, user_id=user_id, level=level.key
    )
    return holder


def unassign(session: Session, principal: Principal, level_id: int, user_id: int) -> AccessLevelHolder:
    """Revokes at once: the holder's windows go and a revoke is due now on every door it opened.
    The row stays, inactive, so a role's level is not handed back by the next sync."""
    level = _level_for_assigning(session, level_id)
    require_assigner(session, principal, level, user_id)
    holder = session.exec(
        select(AccessLevelHolder).where(
            col(AccessLevelHolder.level_id) == level.id, col(AccessLevelHolder.user_id) == user_id
        )
    ).first()
    if holder is None or not holder.active:
        raise NotFound("holder_not_found", f"user {user_id} does not hold level {level.key!r}")
    holder.active = False
    session.add(holder)
    session.flush()
    set_source_windows(session, SOURCE, ident(holder), [])
    audit.record(
        session, principal.actor, "access_level.unassign", "access_level", level.id, user_id=user_id, level=level.key
    )
    return holder


def source_labels(session: Session, sources: Iterable[str]) -> dict[str, str]:
    """`level:<holder id>` -> `level:<level key>` for people reading a door's grants."""
    ids = [int(s.split(":", 1)[1]) for s in sources if s.startswith(f"{SOURCE}:")]
    if not ids:
        return {}
    rows = session.exec(
        select(AccessLevelHolder.id, AccessLevel.key)
        .join(AccessLevel, col(AccessLevel.id) == AccessLevelHolder.level_id)
        .where(col(AccessLevelHolder.id).in_(ids))
    ).all()
    return {f"{SOURCE}:{hid}": f"{SOURCE}:{key}" for hid, key in rows}
