"""Writes the controllers, doors and door links that a site file describes."""

from __future__ import annotations

from sqlmodel import Session, select

from access.models import Controller, Door, DoorResource
from bookgate.upsert import ImportReport, upsert
from config.site import SiteConfig


def apply_site(
    session: Session, site_id: int, site: SiteConfig, resource_ids: dict[str, int], report: ImportReport
) -> None:
    controller_ids: dict[str, int] = {}
    for ctl in site.controllers:
        row = upsert(
            session,
            Controller,
            ctl.key,
            {
                "site_id": site_id,
                "name": ctl.name,
                "driver": ctl.driver,
                "settings": dict(ctl.settings),
                "active": True,
            },
            report,
        )
        controller_ids[ctl.key] = row.id  # type: ignore[assignment]
    for door in site.doors:
        row = upsert(
            session,
            Door,
            door.key,
            {
                "site_id": site_id,
                "name": door.name,
                "kind": door.kind,
                "controller_id": controller_ids[door.controller],
                "output": door.output,
                "slots": door.slots,
                "shared": door.shared,
                "active": True,
            },
            report,
        )
        wanted = {resource_ids[k] for k in door.resources}
        have = set(session.exec(select(DoorResource.resource_id).where(DoorResource.door_id == row.id)).all())
        for rid in wanted - have:
            session.add(DoorResource(door_id=row.id, resource_id=rid))  # type: ignore[arg-type]
        for rid in have - wanted:
            link = session.get(DoorResource, (row.id, rid))
            session.delete(link)
        if wanted != have:
            report.updated["door_resource"] += 1
            report.changes.append(f"relinked door {door.key}")
    session.flush()
