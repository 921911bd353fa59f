"""Reception's pages, server side: the desk's scan form and its outcomes, names escaped
everywhere, the badge, the board, the roll call, the host's page with its QR codes, and
cross-site posts refused."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlmodel import col, select

from access import events
from access.models import Door
from access.protocol import DoorEvent
from core.db import read_session, utcnow, write_session
from tests.vms.conftest import SITE, Desk

NASTY = '<script>alert("x")</script> Eve'


def _browser(app, email: str, password: str) -> TestClient:
    c = TestClient(app)
    r = c.post("/login", data={"email": email, "password": password}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return c


def test_desk_scan_outcomes_badge_board_and_roll_call(desk: Desk, app, make_user):
    rita, pw = make_user({"role": "reception", "site": SITE}, name="Rita Two")
    page = _browser(app, rita.email, pw)
    visit = desk.invite(visitors=[{"name": NASTY, "company": "<b>Acme</b>"}])
    token = desk.token(visit)

    r = page.get("/reception")
    assert r.status_code == 200
    assert 'id="token" name="token" autofocus' in r.text
    assert NASTY not in r.text and "&lt;script&gt;" in r.text  # escaped, never markup
    assert "script-src 'self'" in r.headers["content-security-policy"]

    r = page.post("/reception/scan", data={"site": SITE, "token": "nonsense"}, follow_redirects=False)
    assert r.status_code == 303 and "outcome=token_malformed" in r.headers["location"]
    r = page.post("/reception/scan", data={"site": SITE, "token": token})
    assert r.status_code == 200 and 'data-code="checked_in"' in r.text
    assert f"/reception/visits/{visit['id']}/badge" in r.text
    r = page.post("/reception/scan", data={"site": SITE, "token": token})
    assert 'data-code="already_on_site"' in r.text

    badge = page.get(f"/reception/visits/{visit['id']}/badge")
    assert badge.status_code == 200 and "&lt;script&gt;" in badge.text and NASTY not in badge.text
    assert f'src="/api/v1/visits/{visit["id"]}/qr.svg"' in badge.text
    assert page.get(f"/api/v1/visits/{visit['id']}/qr.svg").status_code == 200  # the image, by cookie

    board = page.get("/reception/board")
    assert board.status_code == 200 and f'data-visit="{visit["id"]}"' in board.text
    assert '<script src="/static/reception.js" defer>' in board.text and NASTY not in board.text
    assert page.get("/static/reception.js").headers["content-type"].startswith("text/javascript")

    # A resident who came in through the lobby is on the roll call beside the visitor.
    resident, _ = make_user({"role": "resident", "site": SITE}, name="Rosa Resident")
    with write_session(desk.engine) as s:
        from access.models import Credential

        s.add(Credential(user_id=resident.id, kind="badge", format="uid", value="cafe0001", compact="cafe0001"))
    with write_session(desk.engine) as s:
        events.record(s, DoorEvent("entrance-ctl", "granted", "cafe0001", 1, utcnow() - timedelta(minutes=5), {}))
    call = page.get("/reception/roll-call")
    assert call.status_code == 200 and "Rosa Resident" in call.text and "&lt;script&gt;" in call.text
    with read_session(desk.engine) as s:
        lobby = s.exec(select(Door).where(col(Door.key) == "lobby-door")).one()
    assert lobby.name in call.text
    api = desk.client.get("/api/v1/visits/roll-call", params={"site": SITE}, headers=desk.reception).json()
    assert api["total"] == 2 and [g["entrance"] for g in api["groups"]] == ["Reception", lobby.name]

    # check-out from the list
    r = page.post(f"/reception/visits/{visit['id']}/check-out", data={"site": SITE})
    assert 'data-code="checked_out"' in r.text
    # a cross-site post is refused
    r = page.post("/reception/scan", data={"site": SITE, "token": token}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    # residents have no desk
    hugo = TestClient(app)
    hugo.cookies.set("bookgate_session", desk.host["Authorization"].split()[1])
    assert hugo.get("/reception").status_code == 403


def test_walk_in_form_and_the_hosts_page(desk: Desk, app, make_user):
    rita, pw = make_user({"role": "reception", "site": SITE}, name="Rita Three")
    page = _browser(app, rita.email, pw)
    r = page.post("/reception/walk-in", data={"site": SITE, "name": NASTY, "host_id": desk.host_id})
    assert r.status_code == 200 and 'data-code="walked_in"' in r.text and NASTY not in r.text
    r = page.post("/reception/walk-in", data={"site": SITE, "name": "Bell\x07", "host_id": desk.host_id})
    assert 'data-code="invalid"' in r.text

    hugo = TestClient(app)
    hugo.cookies.set("bookgate_session", desk.host["Authorization"].split()[1])
    day = (utcnow() + timedelta(days=2)).date().isoformat()
    r = hugo.post("/visits", data={"site": SITE, "name": "Guest Page", "day": day, "start": "10:00", "end": "11:00"})
    assert r.status_code == 200 and "Guest Page" in r.text
    visits = desk.client.get("/api/v1/visits", headers=desk.host).json()
    mine = next(v for v in visits if v["visitor"]["name"] == "Guest Page")
    assert f'src="{mine["qr_svg"]}"' in r.text and mine["doors"] == ["court-gate"]
    r = hugo.post(f"/visits/{mine['id']}/cancel")
    assert desk.client.get(f"/api/v1/visits/{mine['id']}", headers=desk.host).json()["status"] == "cancelled"
