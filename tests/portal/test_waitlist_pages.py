"""Waitlist and webhook pages over the real services: a resident joins from a full slot of the
calendar, sees the offer and accepts it; a manager sees the queue with each candidate's history,
switches the venue to manual and offers to a chosen person; an admin adds a webhook endpoint (its
secret shown once) and deletes it. Nobody else gets in."""

from __future__ import annotations

import re
from datetime import UTC, timedelta
from html import unescape
from urllib.parse import quote

import pytest
from sqlmodel import select

from bms import waitlist
from core.db import read_session
from notify.models import WebhookEndpoint
from tests.bms.conftest import local, sites  # noqa: F401 - fixtures reused
from tests.portal.test_manager_pages import signed_in


@pytest.fixture
def browsers(app, make_user, sites):  # noqa: F811
    def person(*roles, unit=None, name="Test User"):
        user, password = make_user(*roles, unit=unit, name=name)
        return signed_in(app, user, password), user

    resident = {"role": "resident", "site": "paris"}
    return {
        "alice": person(resident, unit="A1", name="Alice"),
        "carol": person(resident, unit="B2", name="Carol"),
        "dan": person(resident, unit="C3", name="Dan"),
        "manager": person({"role": "venue_manager", "venue": "p-sports"}, name="Manny"),
        "admin": person({"role": "admin"}, name="Ada"),
    }


def _book(browser, start, end, resource="p-court"):
    body = {"resource": resource, "start": start.isoformat(), "end": end.isoformat()}
    r = browser.post("/api/v1/reservations", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _join_link(page: str, start) -> str:
    links = [unescape(h) for h in re.findall(r'href="(/waitlist/join\?[^"]+)"', page)]
    wanted = quote(start.astimezone(UTC).isoformat(), safe="")
    [link] = [h for h in links if f"start={wanted}&" in h]
    return link


def test_resident_joins_from_the_calendar_and_accepts_the_offer(app, engine, browsers):
    alice, carol = browsers["alice"][0], browsers["carol"][0]
    start = local(4, 18)
    end = start + timedelta(minutes=30)
    rid = _book(alice, start, end)

    day = carol.get("/book", params={"venue": "p-sports", "day": start.date().isoformat()})
    assert day.status_code == 200
    link = _join_link(day.text, start)
    confirm = carol.get(link)
    assert confirm.status_code == 200 and 'action="/waitlist/join"' in confirm.text
    form = dict(re.findall(r'name="(resource|start|end)" value="([^"]+)"', confirm.text))
    joined = carol.post("/waitlist/join", data=form, follow_redirects=True)
    assert "You are on the waitlist." in joined.text and "waiting" in joined.text
    again = carol.post("/waitlist/join", data=form, follow_redirects=True)
    assert "You are already on this waitlist." in again.text

    assert alice.post(f"/api/v1/reservations/{rid}/cancel", json={}).status_code == 200
    page = carol.get("/waitlist").text
    [entry] = re.findall(r'action="/waitlist/(\d+)/accept"', page)
    body = {"resource": "p-court", "start": start.isoformat(), "end": end.isoformat()}
    refused = browsers["dan"][0].post("/api/v1/reservations", json=body)
    assert refused.status_code == 409 and refused.json()["code"] == "held_for_waitlist"
    done = carol.post(f"/waitlist/{entry}/accept", follow_redirects=True)
    assert "Booked: the place is yours." in done.text
    closed = carol.post(f"/waitlist/{entry}/accept", follow_redirects=True)
    assert "This offer is closed." in closed.text
    assert carol.post(f"/waitlist/{entry}/accept", headers={"Origin": "http://evil.example"}).status_code == 403


def test_pages_speak_french(app, engine, browsers):
    carol = browsers["carol"][0]
    page = carol.get("/waitlist", headers={"Accept-Language": "fr"}, cookies={"bookgate_lang": "fr"})
    assert page.status_code == 200 and "Ma liste d'attente" in unescape(page.text)


def test_manager_queue_history_manual_offer(app, engine, browsers):
    alice, carol, dan = (browsers[k][0] for k in ("alice", "carol", "dan"))
    manager = browsers["manager"][0]
    start = local(4, 20)
    end = start + timedelta(minutes=30)
    rid = _book(alice, start, end)
    for who in (carol, dan):
        body = {"resource": "p-court", "start": start.isoformat(), "end": end.isoformat()}
        assert who.post("/api/v1/waitlist", json=body).status_code == 201

    assert "/manage/waitlist/p-court" in manager.get("/manage/waitlist").text
    policy = {"mode": "manual", "hold_minutes": "20"}
    saved = manager.post("/manage/waitlist/p-court/policy", data=policy, follow_redirects=True)
    assert "Saved." in saved.text and 'value="manual" checked' in saved.text
    assert alice.post(f"/api/v1/reservations/{rid}/cancel", json={}).status_code == 200
    queue = manager.get("/manage/waitlist/p-court").text
    assert queue.index("Carol") < queue.index("Dan")
    assert "0 active, 0 no-shows, 0 cancelled" in queue
    offers = re.findall(r'action="/manage/waitlist/p-court/offer/(\d+)"', queue)
    assert len(offers) == 2
    r = manager.post(f"/manage/waitlist/p-court/offer/{offers[1]}", follow_redirects=True)
    assert "Offer sent." in r.text
    with read_session(engine) as s:
        e = s.get(waitlist.WaitlistEntry, int(offers[1]))
        assert e is not None and e.status == "offered" and e.user_id == browsers["dan"][1].id

    assert carol.get("/manage/waitlist/p-court").status_code == 403
    evil = {"Origin": "http://evil.example"}
    assert manager.post("/manage/waitlist/p-court/policy", data={"mode": "auto"}, headers=evil).status_code == 403


def test_admin_webhooks_secret_once_and_delete(app, engine, browsers):
    admin = browsers["admin"][0]
    added = admin.post(
        "/admin/webhooks",
        data={
            "site": "paris",
            "url": "https://hooks.example/bookgate",
            "description": "CRM",
            "events": ["waitlist.offer"],
        },
    )
    assert added.status_code == 201, added.text
    secret = re.search(r'id="signing-secret">([^<]+)<', added.text).group(1)
    assert secret.startswith("whsec_")
    listing = admin.get("/admin/webhooks").text
    assert "https://hooks.example/bookgate" in listing and secret not in listing
    bad = admin.post("/admin/webhooks", data={"site": "paris", "url": "ftp://nope"})
    assert bad.status_code == 422 and "http:// or https://" in bad.text
    with read_session(engine) as s:
        [ep] = s.exec(select(WebhookEndpoint)).all()
    assert admin.post(f"/admin/webhooks/{ep.id}/delete", follow_redirects=True).status_code == 200
    with read_session(engine) as s:
        assert s.exec(select(WebhookEndpoint)).all() == []
    resident = browsers["carol"][0]
    assert resident.get("/admin/webhooks").status_code == 403
    assert resident.post("/admin/webhooks", data={"site": "paris", "url": "https://x.example"}).status_code == 403
