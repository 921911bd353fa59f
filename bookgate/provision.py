"""Site configuration import: one transaction over every domain, refused whole on any error.

Lives at the composition level (it calls bms and access, and checks each controller's settings
with its driver family from the drivers' registry), beside the app and the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from access import siteconfig as access_config
from bms import siteconfig as bms_config
from config.site import SiteFile, SiteFileError, controller_errors, load_site_file, parse_site_document
from core import audit
from core.audit import Actor
from core.db import ident, write_session
from core.models import Site, Venue
from core.upsert import ImportReport, upsert
from drivers.registry import REGISTRY, DriverRegistry


def parse_site(data: Any, *, drivers: DriverRegistry = REGISTRY) -> SiteFile:
    """A loaded document validated whole, its controllers' settings by their driver families;
    SiteFileError lists every problem as 'path.to.field: reason'."""
    return parse_site_document(data, check_controller=drivers.check_controller)


def load_site(path: str | Path, *, drivers: DriverRegistry = REGISTRY) -> SiteFile:
    return load_site_file(path, check_controller=drivers.check_controller)


def apply_site_file(
    engine: Engine, doc: SiteFile, actor: Actor, *, source: str = "", drivers: DriverRegistry = REGISTRY
) -> ImportReport:
    """Write a validated file. The controllers are checked again here, the one gate every import
    passes, whoever parsed the document."""
    errors = controller_errors(doc, drivers.check_controller)
    if errors:
        raise SiteFileError(errors)
    report = ImportReport()
    with write_session(engine) as s:
        for site in doc.sites:
            site_row = upsert(
                s,
                Site,
                site.key,
                {
                    "name": str(site.name),
                    "names": site.name.names,
                    "timezone": site.timezone,
                    "locale": site.locale,
                    "defaults": site.defaults.model_dump(mode="json", exclude_none=True),
                },
                report,
            )
            resource_ids: dict[str, int] = {}
            for venue in site.venues:
                venue_row = upsert(
                    s,
                    Venue,
                    venue.key,
                    {
                        "site_id": site_row.id,
                        "name": str(venue.name),
                        "names": venue.name.names,
                        "rules": venue.rules.model_dump(mode="json", exclude_none=True),
                    },
                    report,
                )
                resource_ids |= bms_config.apply_venue(s, ident(venue_row), venue, report)
            access_config.apply_site(s, ident(site_row), site, resource_ids, report)
        if report.changed:
            audit.record(s, actor, "site.import", "site_file", source or "-", after=report.as_dict())
    return report


def import_site_file(
    engine: Engine, path: str | Path, actor: Actor, *, drivers: DriverRegistry = REGISTRY
) -> ImportReport:
    """Validate the whole file first (SiteFileError lists every problem), then write it."""
    return apply_site_file(engine, load_site(path, drivers=drivers), actor, source=Path(path).name, drivers=drivers)
