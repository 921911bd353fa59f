"""Booking fixtures: the test sites, residents of them, a manager, and times in the site's zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bookgate.provision import import_site_file
from core.audit import SYSTEM
from core.db import utcnow
from tests.conftest import login

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def local(day_offset: int, hh: int, mm: int = 0, tz: ZoneInfo = PARIS) -> datetime:
    """An aware local time `day_offset` days from today, at hh:mm."""
    d = utcnow().astimezone(tz).date() + timedelta(days=day_offset)
    return datetime.combine(d, time(hh, mm), tz)


@dataclass
class Person:
    id: int
    email: str
    headers: dict[str, str]


@pytest.fixture
def sites(engine):
    import_site_file(engine, Path(__file__).with_name("site.yaml"), SYSTEM)


@pytest.fixture
def people(client, make_user, sites):
    def person(*roles, unit=None):
        user, password = make_user(*roles, unit=unit)
        return Person(user.id, user.email, login(client, user.email, password))

    resident = {"role": "resident", "site": "paris"}
    return {
        "alice": person(resident, unit="A1"),
        "bob": person(resident, unit="A1"),
        "carol": person(resident, unit="B2"),
        "manager": person(
            {"role": "venue_manager", "venue": "p-sports"}, {"role": "venue_manager", "venue": "p-rooms"}
        ),
        "other_manager": person({"role": "venue_manager", "venue": "ny-gym"}),
        "ny": person({"role": "resident", "site": "newyork"}),
    }


def book(client, who: Person, resource: str, start: datetime, end: datetime, **extra):
    body = {"resource": resource, "start": start.isoformat(), "end": end.isoformat(), **extra}
    return client.post("/api/v1/reservations", json=body, headers=who.headers)
