"""bms's extension points are an object each app holds, passed to the services, never module state."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

import bms.service
from bms import service
from bms.booking import NO_POLICIES, BookingPolicies
from bms.states import Status
from bookgate.app import create_app
from core.db import write_session
from moderation import policy as moderation_policy
from tests.moderation.conftest import book, local, principal_of


def test_two_apps_in_one_process_do_not_share_policies(app, client, moderated, settings, engine):
    """p-court-b is `rules`-moderated: with moderation's policy a request inside the (empty)
    conditions is confirmed at once; without it, it waits for a manager."""
    other = create_app(settings, engine=engine, migrate_on_start=False)
    assert other.state.booking_policies is not app.state.booking_policies
    assert app.state.booking_policies.status == (moderation_policy.decide,)
    assert app.state.booking_policies.change == (moderation_policy.hold_changes,)
    with pytest.raises(AttributeError):
        app.state.booking_policies.status.append(lambda *a: None)  # frozen: nothing can be added later
    other.state.booking_policies = NO_POLICIES  # this app runs without moderation's rules
    start = local(3, 10)
    with TestClient(other) as bare:
        r = book(bare, moderated["alice"], "p-court-b", start, start + timedelta(hours=1))
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "pending" and r.json()["status_reason"] is None
    r = book(client, moderated["carol"], "p-court-b", start + timedelta(hours=2), start + timedelta(hours=3))
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "confirmed" and r.json()["status_reason"] == moderation_policy.AUTO_REASON
    third = create_app(settings, engine=engine, migrate_on_start=False)
    assert third.state.booking_policies == app.state.booking_policies  # built alike, untouched by the swap
    for name in ("register_status_policy", "register_change_policy", "_status_policies", "_change_policies"):
        assert not hasattr(bms.service, name)


def test_services_use_the_policies_they_are_given(moderated, engine):
    alice = principal_of(engine, moderated["alice"])
    start = local(4, 10)

    def request(hour: int, policies: BookingPolicies) -> tuple[str, str | None]:
        data = service.ReservationCreate(
            resource="p-court-b", start=start + timedelta(hours=hour), end=start + timedelta(hours=hour + 1)
        )
        with write_session(engine) as s:
            r = service.create(s, alice, data, policies=policies)
            return r.status, r.status_reason

    assert request(0, NO_POLICIES) == ("pending", None)
    said_no = BookingPolicies(status=[lambda _s, _d, _n: None, lambda _s, _d, _n: (Status.pending, "not today")])
    assert request(2, said_no) == ("pending", "not today")
    assert request(4, BookingPolicies(status=[lambda _s, _d, _n: (Status.confirmed, "fine")])) == ("confirmed", "fine")
