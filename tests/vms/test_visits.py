"""Visits through the API on both databases: invitation and its QR code, the desk's check-in and
check-out with the door window they open and close, refused codes and their reasons, walk-ins,
the deny list's hold, series, and hosts asking for doors they may not open."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import col, select, update

from access.models import AccessWindow, Credential, lookup_token
from core.db import read_session, utcnow, write_session
from core.outbox import OutboxMessage
from tests.vms.conftest import SITE, Desk
from vms.models import Visit, VisitEvent, Visitor


def _windows(desk: Desk, visit_id: int) -> list[AccessWindow]:
    with read_session(desk.engine) as s:
        return list(
            s.exec(
                select(AccessWindow).where(
                    col(AccessWindow.source_type) == "visit", col(AccessWindow.source_id) == visit_id
                )
            )
        )


def _outbox(desk: Desk, kind: str) -> list[dict]:
    with read_session(desk.engine) as s:
        return [m.payload for m in s.exec(select(OutboxMessage).where(col(OutboxMessage.kind) == kind))]


def test_invite_qr_check_in_and_out(desk: Desk, make_user):
    from tests.conftest import login

    visit = desk.invite()
    nosy, pw = make_user({"role": "resident", "site": SITE})
    other = login(desk.client, nosy.email, pw)
    for path in (f"/api/v1/visits/{visit['id']}", visit["qr_png"], visit["qr_svg"]):
        assert desk.client.get(path, headers=other).status_code == 404  # neither the visit nor its code
    assert desk.client.get("/api/v1/visits", headers=other).json() == []
    assert visit["status"] == "invited" and visit["doors"] == ["court-gate"]
    token = desk.token(visit)
    svg = desk.client.get(visit["qr_svg"], headers=desk.host)
    assert svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content
    # The secret is stored only as a hash, and as the visitor's keyed QR credential.
    with read_session(desk.engine) as s:
        row = s.get(Visit, visit["id"])
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token not in (row.token_nonce or "")
        cred = s.get(Credential, row.qr_credential_id)
        assert cred.kind == "qr" and cred.value == lookup_token("qr", token) and cred.value != token
        assert cred.secret is None
    invitation = _outbox(desk, "visit.invitation")
    assert invitation[0]["visitor_name"] == "Vera Visitor" and invitation[0]["host_name"] == "Hugo Host"
    assert token not in str(invitation)
    # Reception sees the code too (to print the badge).
    assert desk.client.get(visit["qr_png"], headers=desk.reception).status_code == 200

    assert _windows(desk, visit["id"]) == []  # no door access before arrival
    r = desk.scan(token)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "checked_in"
    wins = _windows(desk, visit["id"])
    visitor_user = visit["visitor"]["user_id"]
    assert [(w.user_id, w.door_id, w.mode) for w in wins] == [(visitor_user, desk.gate_id, "badge")]
    assert wins[0].end >= datetime.fromisoformat(visit["end"]) + timedelta(minutes=15)
    arrival = _outbox(desk, "visit.arrival")
    assert arrival[0]["visitor_name"] == "Vera Visitor" and arrival[0]["host_name"] == "Hugo Host"
    on_site = desk.client.get("/api/v1/visits/on-site", params={"site": SITE}, headers=desk.reception).json()
    assert [v["id"] for v in on_site] == [visit["id"]]

    r = desk.client.post(f"/api/v1/visits/{visit['id']}/check-out", headers=desk.reception)
    assert r.status_code == 200 and r.json()["status"] == "checked_out"
    assert _windows(desk, visit["id"]) == []
    with read_session(desk.engine) as s:
        assert s.get(Credential, s.get(Visit, visit["id"]).qr_credential_id).revoked_at is not None
        kinds = [e.kind for e in s.exec(select(VisitEvent).order_by(col(VisitEvent.id)))]
    assert kinds == ["arrival", "departure"]
    # Replayed after check-out: refused, and the QR image is gone.
    r = desk.scan(token)
    assert r.status_code == 409 and r.json()["code"] == "token_used"
    assert desk.client.get(visit["qr_png"], headers=desk.host).status_code == 404
    results = [e.summary for e in desk.audit_actions("visit.scan")]
    assert '"result":"checked_in"' in results[0] and '"result":"token_used"' in results[1]
    assert all("Vera" not in e.summary for e in desk.audit_actions("visit.scan") + desk.audit_actions("visit.invite"))


def test_refused_codes_say_why_and_are_audited(desk: Desk, make_user):
    from core.models import RoleGrant, Site

    reasons = []

    def refused(token: str, code: str, status: int = 409, **extra) -> None:
        r = desk.scan(token, **extra)
        assert (r.status_code, r.json()["code"]) == (status, code), r.text
        reasons.append(code)

    refused("hello", "token_malformed", 422)
    refused("bgv_" + "A" * 43, "token_unknown", 404)  # well formed, forged
    r = desk.scan("bgv_" + "A" * 5000)
    assert r.status_code == 422  # oversized: refused before any work
    now = utcnow()
    early = desk.invite(start=now + timedelta(hours=3), end=now + timedelta(hours=4))
    refused(desk.token(early), "token_not_yet_valid")
    late = desk.invite()
    late_token = desk.token(late)
    with write_session(desk.engine) as s:
        s.exec(
            update(Visit)
            .where(col(Visit.id) == late["id"])
            .values(start=now - timedelta(hours=5), end=now - timedelta(hours=2))
        )
    refused(late_token, "token_expired")
    cancelled = desk.invite()
    cancelled_token = desk.token(cancelled)
    assert desk.client.post(f"/api/v1/visits/{cancelled['id']}/cancel", headers=desk.host).status_code == 200
    refused(cancelled_token, "token_revoked")
    twice = desk.invite()
    twice_token = desk.token(twice)
    assert desk.scan(twice_token).status_code == 200
    refused(twice_token, "already_on_site")
    # A desk of another site: the code is for les-tilleuls.
    with write_session(desk.engine) as s:
        other = Site(key="other-site", name="Other", timezone="Europe/Paris")
        s.add(other)
        s.flush()
        rita = s.exec(select(RoleGrant).where(col(RoleGrant.role) == "reception")).first()
        s.add(RoleGrant(user_id=rita.user_id, role="reception", site_id=other.id))
    fresh = desk.invite()
    refused(desk.token(fresh), "token_wrong_site", site="other-site")
    scans = desk.audit_actions("visit.scan")
    audited = [e.summary for e in scans]
    for code in reasons:
        assert any(f'"result":"{code}"' in s for s in audited), code
    # a resident may not scan at all
    r = desk.client.post("/api/v1/visits/check-in", json={"token": twice_token}, headers=desk.host)
    assert r.status_code == 403


def test_a_host_may_not_invite_to_doors_they_cannot_open(desk: Desk):
    now = utcnow()
    body = {
        "site": SITE,
        "visitors": [{"name": "Pat"}],
        "start": now.isoformat(),
        "end": (now + timedelta(hours=1)).isoformat(),
        "doors": ["court-gate", "lobby-door"],
    }
    r = desk.client.post("/api/v1/visits", json=body, headers=desk.host)
    assert r.status_code == 403 and r.json()["code"] == "door_not_allowed"
    assert "lobby-door" in r.json()["message"]
    with read_session(desk.engine) as s:
        assert s.exec(select(Visit)).all() == [] and s.exec(select(Visitor)).all() == []
    assert len(desk.audit_actions("visit.doors_refused")) == 1
    body["doors"] = ["court-gate"]
    assert desk.client.post("/api/v1/visits", json=body, headers=desk.host).status_code == 201


def test_walk_in_and_names_with_markup(desk: Desk):
    name = '<img src=x onerror="alert(1)"> Zoé'
    r = desk.client.post(
        "/api/v1/visits/walk-in",
        json={"site": SITE, "host_id": desk.host_id, "visitor": {"name": name, "phone": "+33 6 12 34 56 78"}},
        headers=desk.reception,
    )
    assert r.status_code == 201, r.text
    walk = r.json()
    assert walk["status"] == "checked_in" and walk["visitor"]["name"] == name
    assert walk["doors"] == ["court-gate"]
    assert len(_windows(desk, walk["id"])) == 1
    for bad in ("Bell\x07", "Right\u202eleft", "tab\there"):
        r = desk.client.post(
            "/api/v1/visits/walk-in",
            json={"site": SITE, "host_id": desk.host_id, "visitor": {"name": bad}},
            headers=desk.reception,
        )
        assert r.status_code == 422, bad
    # a resident cannot register walk-ins
    r = desk.client.post(
        "/api/v1/visits/walk-in",
        json={"site": SITE, "host_id": desk.host_id, "visitor": {"name": "X"}},
        headers=desk.host,
    )
    assert r.status_code == 403


def test_the_deny_list_holds_a_check_in_for_a_decision(desk: Desk):
    r = desk.client.post(
        "/api/v1/visits/deny-list",
        json={"site": SITE, "name": "  JOHN   doe ", "reason": "banned by the board"},
        headers=desk.reception,
    )
    assert r.status_code == 201, r.text
    flagged = desk.invite(visitors=[{"name": "John Doe"}])
    r = desk.scan(desk.token(flagged))
    assert r.status_code == 200 and r.json()["status"] == "held"
    assert "banned" in r.json()["hold_reason"]
    assert _windows(desk, flagged["id"]) == []  # no door access while held
    r = desk.client.post(f"/api/v1/visits/{flagged['id']}/decision", json={"allow": True}, headers=desk.host)
    assert r.status_code == 403  # not the host's decision: reception's or an admin's
    r = desk.client.post(
        f"/api/v1/visits/{flagged['id']}/decision", json={"allow": True, "note": "known"}, headers=desk.reception
    )
    assert r.json()["status"] == "checked_in" and len(_windows(desk, flagged["id"])) == 1
    # e-mail match, case-insensitive; denied this time
    desk.client.post(
        "/api/v1/visits/deny-list", json={"site": SITE, "email": "EVIL@Example.org"}, headers=desk.reception
    )
    other = desk.invite(visitors=[{"name": "Someone Else", "email": "evil@example.ORG"}])
    token = desk.token(other)
    assert desk.scan(token).json()["status"] == "held"
    r = desk.client.post(f"/api/v1/visits/{other['id']}/decision", json={"allow": False}, headers=desk.reception)
    assert r.json()["status"] == "denied"
    assert desk.scan(token).json()["code"] == "token_revoked"
    assert [e.action for e in desk.audit_actions("visit.held")] == ["visit.held", "visit.held"]
    assert len(desk.audit_actions("visit.hold_decided")) == 2


def test_series_are_bounded_and_keep_local_time_across_dst(desk: Desk):
    zone = ZoneInfo("Europe/Paris")
    start = datetime(2027, 3, 19, 9, 0, tzinfo=zone)
    base = {
        "site": SITE,
        "visitors": [{"name": "Clara Cleaner"}],
        "start": start.isoformat(),
        "end": (start + timedelta(hours=2)).isoformat(),
    }
    r = desk.client.post("/api/v1/visits", json={**base, "repeat": {"every_weeks": 1}}, headers=desk.host)
    assert r.status_code == 422  # no end at all
    r = desk.client.post("/api/v1/visits", json={**base, "repeat": {"until": "2029-01-01"}}, headers=desk.host)
    assert r.status_code == 422 and r.json()["code"] == "unbounded_series"
    r = desk.client.post("/api/v1/visits", json={**base, "repeat": {"count": 5000}}, headers=desk.host)
    assert r.status_code == 422
    r = desk.client.post("/api/v1/visits", json={**base, "repeat": {"count": 3}}, headers=desk.host)
    assert r.status_code == 201, r.text
    visits = r.json()
    local = [datetime.fromisoformat(v["start"]).astimezone(zone) for v in visits]
    assert [(d.date().isoformat(), d.hour) for d in local] == [("2027-03-19", 9), ("2027-03-26", 9), ("2027-04-02", 9)]
    assert [datetime.fromisoformat(v["start"]).astimezone(UTC).hour for v in visits] == [8, 8, 7]
    assert len({v["series_id"] for v in visits}) == 1 and visits[0]["series_id"] is not None
    assert len({desk.token(v) for v in visits}) == 3  # each occurrence has its own code


def test_a_day_badge_is_a_visit_credential_taken_back_at_check_out(desk: Desk):
    visit = desk.invite()
    r = desk.client.post(f"/api/v1/visits/{visit['id']}/badge", json={"value": "0A1B2C3D"}, headers=desk.reception)
    assert r.status_code == 201, r.text
    desk.scan(desk.token(visit))
    desk.client.post(f"/api/v1/visits/{visit['id']}/check-out", headers=desk.reception)
    with read_session(desk.engine) as s:
        badge = s.get(Credential, r.json()["credential_id"])
        assert badge.revoked_at is not None and badge.user_id == visit["visitor"]["user_id"]
