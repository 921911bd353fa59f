"""Moderation fixtures: the booking test sites and people, with some resources switched to
`manual` and `rules` moderation by their manager over the API."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from core.auth import Principal, load_principal
from core.db import read_session
from core.models import User
from tests.bms.conftest import Person, book, local, people, sites  # noqa: F401 - fixtures reused

__all__ = ["book", "local"]


@pytest.fixture
def moderated(client, people):  # noqa: F811 - the imported fixture
    """p-court: manual; p-court-b and p-class: rules; p-pool: manual."""
    manager = people["manager"].headers
    for key, mode in (("p-court", "manual"), ("p-court-b", "rules"), ("p-class", "rules"), ("p-pool", "manual")):
        r = client.patch(f"/api/v1/resources/{key}/rules", json={"moderation": mode}, headers=manager)
        assert r.status_code == 200, r.text
    return people


def principal_of(engine, person: Person) -> Principal:
    with read_session(engine) as s:
        return load_principal(s, s.get(User, person.id))


def request_slot(client, who: Person, resource: str, start: datetime, hours: float = 1, **extra) -> dict:
    r = book(client, who, resource, start, start + timedelta(hours=hours), **extra)
    assert r.status_code == 201, r.text
    return r.json()
