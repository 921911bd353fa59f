"""Writes the controllers, doors, door links and access levels that a site file describes.

A change to doors or their links reaches everything that decides from them in the same
transaction: the online-decision index (through the change log) and the transitions of the
windows on the resources whose doors changed (re-planned from now). Access levels are written
by key within the site (a level made through the API and absent from the file is left alone),
and every level of the site is then synced: its role holders and their windows."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from access.decisions import note_doors
from access.levels import sync_levels
from access.models import AccessLevel, AccessLevelDoor, AccessWindow, Controller, Door, DoorResource
from access.transitions import plan_source
from config.site import AccessLevelConfig, SiteConfig
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
    for level in site.access_levels:
        _apply_level(session, site_id, level, report)
    sync_levels(session, utcnow(), site_id)


def _apply_level(session: Session, site_id: int, cfg: AccessLevelConfig, report: ImportReport) -> None:
    values: dict[str, Any] = {
        "name": cfg.name,
        "schedule": cfg.weekly,
        "exceptions": sorted(d.isoformat() for d in cfg.exceptions),
        "roles": sorted(set(cfg.roles)),
        "mode": cfg.mode,
        "valid_from": cfg.valid_from,
        "valid_until": cfg.valid_until,
    }
    row = session.exec(
        select(AccessLevel).where(col(AccessLevel.site_id) == site_id, col(AccessLevel.key) == cfg.key)
    ).first()
    if row is None:
        row = AccessLevel(site_id=site_id, key=cfg.key, **values)
        report.created["access_level"] += 1
        report.changes.append(f"created access_level {cfg.key}")
    else:
        diff = sorted(k for k, v in values.items() if getattr(row, k) != v)
        for k in diff:
            setattr(row, k, values[k])
        if diff:
            report.updated["access_level"] += 1
            report.changes.append(f"updated access_level {cfg.key}: {', '.join(diff)}")
        else:
            report.unchanged["access_level"] += 1
    session.add(row)
    session.flush()
    wanted = set(session.exec(select(Door.id).where(col(Door.key).in_(cfg.doors))).all())
    have = set(session.exec(select(AccessLevelDoor.door_id).where(col(AccessLevelDoor.level_id) == row.id)).all())
    for door in have - wanted:
        link = session.get(AccessLevelDoor, (row.id, door))
        if link is not None:
            session.delete(link)
    for door in sorted(d for d in wanted - have if d is not None):
        session.add(AccessLevelDoor(level_id=ident(row), door_id=door))
    if wanted != have:
        report.changes.append(f"access_level {cfg.key}: doors changed")
        if not any(c.startswith(f"updated access_level {cfg.key}") for c in report.changes):
            report.updated["access_level"] += 1
    session.flush()
