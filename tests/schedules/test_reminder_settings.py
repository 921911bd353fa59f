# ruff: noqa: F811 - fixtures imported from the booking and delivery tests
"""Which reminders go out is a site setting (`reminder_minutes`), stored by the site file's import;
a venue or resource may override it; unset means 24 h and 1 h; the per-user opt-out still holds."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import col, select

from config.site import SiteFileError, parse_site_document
from core.db import read_session
from core.models import Site
from core.outbox import OutboxMessage
from schedules.reminders import write_due_reminders
from tests.bms.conftest import NEW_YORK, book, local, people, sites  # noqa: F401 - fixtures reused
from tests.schedules.site_settings import reimport, resource


def _reminders(engine) -> list[tuple[int, int]]:
    with read_session(engine) as s:
        rows = s.exec(select(OutboxMessage).where(col(OutboxMessage.kind) == "reservation.reminder")).all()
    return sorted((m.payload["reservation_id"], m.payload["offset_minutes"]) for m in rows)


def test_site_reminders_stored_and_followed_with_overrides(client, engine, people, tmp_path):
    def change(doc):
        doc["sites"][0]["defaults"]["reminder_minutes"] = [120]  # paris: 2 h only
        resource(doc, "p-court-b")["rules"]["reminder_minutes"] = []  # this court: none

    reimport(engine, tmp_path, change)
    with read_session(engine) as s:
        paris = s.exec(select(Site).where(col(Site.key) == "paris")).one()
    assert paris.defaults["reminder_minutes"] == [120]

    start = local(3, 18)
    court = book(client, people["alice"], "p-court", start, start + timedelta(hours=1)).json()["id"]
    book_b = book(client, people["alice"], "p-court-b", start, start + timedelta(hours=1))
    assert book_b.status_code == 201, book_b.text
    ny_start = local(3, 18, tz=NEW_YORK)
    ny = book(client, people["ny"], "ny-court", ny_start, ny_start + timedelta(hours=1)).json()["id"]

    # 24 h before: only New York (defaults) is reminded
    assert write_due_reminders(engine, ny_start - timedelta(hours=24) + timedelta(minutes=1)) == 1
    assert _reminders(engine) == [(ny, 24 * 60)]
    assert write_due_reminders(engine, start - timedelta(hours=24) + timedelta(minutes=1)) == 0
    # 2 h before: paris's court, never the court with none
    assert write_due_reminders(engine, start - timedelta(hours=2) + timedelta(minutes=1)) == 1
    assert write_due_reminders(engine, start - timedelta(minutes=59)) == 0  # no 1 h one in paris
    assert (court, 120) in _reminders(engine)
    assert {rid for rid, _ in _reminders(engine)} == {court, ny}


def test_a_site_lead_time_beyond_a_day_is_looked_for(client, engine, people, tmp_path):
    reimport(engine, tmp_path, lambda doc: doc["sites"][0]["defaults"].update(reminder_minutes=[3 * 24 * 60, 60]))
    start = local(5, 18)
    rid = book(client, people["alice"], "p-court", start, start + timedelta(hours=1)).json()["id"]
    assert write_due_reminders(engine, start - timedelta(days=3) + timedelta(minutes=1)) == 1
    assert _reminders(engine) == [(rid, 3 * 24 * 60)]


@pytest.mark.parametrize("bad", [[1], [15 * 24 * 60], [60, 60, 60, 60, 60, 60], "60"])
def test_bad_reminder_settings_are_refused_with_their_path(bad):
    doc = {"version": 1, "sites": [{"key": "s", "name": "S", "timezone": "UTC", "defaults": {"reminder_minutes": bad}}]}
    with pytest.raises(SiteFileError) as refused:
        parse_site_document(doc)
    assert all(e.startswith("sites.0.defaults.reminder_minutes") for e in refused.value.errors)
