"""Writes the resources and units that a site file describes (called by the shell's importer)."""

from __future__ import annotations

from sqlmodel import Session, col, select

from bms.availability import bump_stamp
from bms.models import Resource, ResourceUnit
from config.site import ResourceConfig, VenueConfig
from core.db import ident
from core.upsert import ImportReport, upsert


def _unit_specs(res: ResourceConfig) -> list[tuple[str, str]]:
    if res.pool is None:
        return [(res.key, res.name)]
    width = len(str(res.pool.units))
    return [
        (f"{res.key}-{res.pool.unit_prefix}{n:0{width}d}".lower(), f"{res.name} {res.pool.unit_prefix}{n:0{width}d}")
        for n in range(1, res.pool.units + 1)
    ]


def apply_venue(session: Session, venue_id: int, venue: VenueConfig, report: ImportReport) -> dict[str, int]:
    """Upsert the venue's resources and their units; return resource key -> id."""
    bump_stamp(session)  # nodes' cached contexts (resources, units, rules) are stale from the commit
    ids: dict[str, int] = {}
    for res in venue.resources:
        row = upsert(
            session,
            Resource,
            res.key,
            {
                "venue_id": venue_id,
                "name": str(res.name),
                "names": res.name.names,
                "kind": res.kind.value,
                "capacity": res.capacity,
                "quota_group": res.group,
                "pool_strategy": res.pool.strategy if res.pool else None,
                "rules": res.rules.model_dump(mode="json", exclude_none=True),
                "access": res.access.model_dump(mode="json", exclude_none=True),
                "active": True,
            },
            report,
        )
        ids[res.key] = ident(row)
        specs = _unit_specs(res)
        wanted = {key for key, _ in specs}
        for position, (key, name) in enumerate(specs):
            upsert(
                session,
                ResourceUnit,
                key,
                {"resource_id": row.id, "name": name, "position": position, "active": True},
                report,
            )
        # Units dropped from the file are retired, never deleted: bookings may point at them.
        for unit in session.exec(select(ResourceUnit).where(col(ResourceUnit.resource_id) == row.id)).all():
            if unit.key not in wanted and unit.active:
                unit.active = False
                session.add(unit)
                report.updated["resource_unit"] += 1
                report.changes.append(f"retired resource_unit {unit.key}")
    return ids
