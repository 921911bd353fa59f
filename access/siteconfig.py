"""Writes the controllers, doors and door links that a site file describes.

A change to doors or their links reaches everything that decides from them in the same
transaction: the online-decision index (through the change log) and the transitions of the
windows on the resources whose doors changed (re-planned from now)."""

from __future__ import annotations

from sqlmodel import Session, col, select

from access.decisions import note_doors
from access.models import AccessWindow, Controller, Door, DoorResource
from access.transitions import plan_source
from config.site import SiteConfig
from core.db import ident, utcnow
from core.upsert import ImportReport, upsert


def apply_site(
    session: Session, site_id: int, site: SiteConfig, resource_ids: dict[str, int], report: ImportReport
) -> None:
    changes_before = len(report.changes)
    relinked: set[int] = set()
    controller_ids: dict[str, int] = {}
    for ctl in site.controllers:
        ctl_row = upsert(
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
        controller_ids[ctl.key] = ident(ctl_row)
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
        have = set(session.exec(select(DoorResource.resource_id).where(col(DoorResource.door_id) == row.id)).all())
        for rid in wanted - have:
            session.add(DoorResource(door_id=ident(row), resource_id=rid))
        for rid in have - wanted:
            link = session.get(DoorResource, (row.id, rid))
            session.delete(link)
        if wanted != have:
            relinked |= wanted ^ have
            report.updated["door_resource"] += 1
            report.changes.append(f"relinked door {door.key}")
    session.flush()
    if len(report.changes) != changes_before:
        note_doors(session)
    if relinked:
        now = utcnow()
        sources = session.exec(
            select(AccessWindow.source_type, AccessWindow.source_id)
            .where(col(AccessWindow.resource_id).in_(relinked), col(AccessWindow.end) > now)
            .distinct()
        ).all()
        for source_type, source_id in sources:
            plan_source(session, source_type, source_id, now)
