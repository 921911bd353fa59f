"""Site configuration import: one transaction over every domain, refused whole on any error.

Lives at the composition level (it calls bms and access), beside the app and the CLI.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from access import siteconfig as access_config
from bms import siteconfig as bms_config
from config.site import SiteFile, load_site_file
from core import audit
from core.audit import Actor
from core.db import write_session
from core.models import Site, Venue
from core.upsert import ImportReport, upsert


def apply_site_file(engine: Engine, doc: SiteFile, actor: Actor, *, source: str = "") -> ImportReport:
    report = ImportReport()
    with write_session(engine) as s:
        for site in doc.sites:
            site_row = upsert(
                s,
                Site,
                site.key,
                {
                    "name": site.name,
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
                        "name": venue.name,
                        "rules": venue.rules.model_dump(mode="json", exclude_none=True),
                    },
                    report,
                )
                resource_ids |= bms_config.apply_venue(s, venue_row.id, venue, report)  # type: ignore[arg-type]
            access_config.apply_site(s, site_row.id, site, resource_ids, report)  # type: ignore[arg-type]
        if report.changed:
            audit.record(s, actor, "site.import", "site_file", source or "-", after=report.as_dict())
    return report


def import_site_file(engine: Engine, path: str | Path, actor: Actor) -> ImportReport:
    """Validate the whole file first (SiteFileError lists every problem), then write it."""
    return apply_site_file(engine, load_site_file(path), actor, source=Path(path).name)
