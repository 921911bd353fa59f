"""The visitors' jobs with a controlled clock: automatic check-out (N hours after check-in, and at
the site's closing time with a notice to reception), no-shows, and the retention purge, after
which `bookgate audit verify` still finds the chain intact."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import col, select

from access.models import AccessWindow, Credential
from bookgate.cli import main as cli_main
from core import audit
from core.db import read_session, utcnow, write_session
from core.models import User
from core.outbox import OutboxMessage
from schedules import visits as jobs
from tests.vms.conftest import SITE, Desk
from vms.models import Visit, Visitor


def _status(desk: Desk, visit_id: int) -> str:
    with read_session(desk.engine) as s:
        return s.get(Visit, visit_id).status


def _has_window(desk: Desk, visit_id: int) -> bool:
    with read_session(desk.engine) as s:
        return (
            s.exec(
                select(AccessWindow).where(
                    col(AccessWindow.source_type) == "visit", col(AccessWindow.source_id) == visit_id
                )
            ).first()
            is not None
        )


def test_automatic_check_out_after_hours_and_at_closing(desk: Desk):
    r = desk.client.put(
        f"/api/v1/visits/policy/{SITE}",
        json={"auto_checkout_hours": 3, "closing_time": "22:00"},
        headers=desk.admin,
    )
    assert r.status_code == 200, r.text
    visit = desk.invite()
    assert desk.scan(desk.token(visit)).status_code == 200
    with read_session(desk.engine) as s:
        checked_in = s.get(Visit, visit["id"]).checked_in_at
    zone = ZoneInfo("Europe/Paris")
    local = checked_in.astimezone(zone)
    closing = datetime.combine(local.date(), datetime.min.time(), tzinfo=zone).replace(hour=22)
    if closing <= local:
        closing += timedelta(days=1)
    first = min(checked_in + timedelta(hours=3), closing)
    assert jobs.auto_check_out(desk.engine, first - timedelta(seconds=1)) == 0
    assert _status(desk, visit["id"]) == "checked_in" and _has_window(desk, visit["id"])
    assert jobs.auto_check_out(desk.engine, first + timedelta(seconds=1)) == 1
    assert _status(desk, visit["id"]) == "checked_out" and not _has_window(desk, visit["id"])

    # A site that closes before the N hours are over: checked out at closing, reception told.
    desk.client.put(
        f"/api/v1/visits/policy/{SITE}", json={"auto_checkout_hours": 72, "closing_time": "22:00"}, headers=desk.admin
    )
    with read_session(desk.engine) as s:  # a first check-out in the 3 h before closing was a closing one too
        earlier = set(s.exec(select(OutboxMessage.id).where(col(OutboxMessage.kind) == "visit.on_site_at_closing")))
    late = desk.invite(visitors=[{"name": "Night Owl"}])
    desk.scan(desk.token(late))
    with read_session(desk.engine) as s:
        t = s.get(Visit, late["id"]).checked_in_at.astimezone(zone)
    at = datetime.combine(t.date(), datetime.min.time(), tzinfo=zone).replace(hour=22)
    if at <= t:
        at += timedelta(days=1)
    assert jobs.auto_check_out(desk.engine, at + timedelta(minutes=1)) == 1
    with read_session(desk.engine) as s:
        notices = [
            m.payload
            for m in s.exec(select(OutboxMessage).where(col(OutboxMessage.kind) == "visit.on_site_at_closing"))
            if m.id not in earlier
        ]
    assert [v["visitor_name"] for n in notices for v in n["visitors"]] == ["Night Owl"]
    assert any('"how":"closing"' in e.summary for e in desk.audit_actions("visit.check_out"))


def test_no_show_kills_the_code(desk: Desk):
    now = utcnow()
    visit = desk.invite(start=now + timedelta(minutes=5), end=now + timedelta(hours=1))
    token = desk.token(visit)
    assert jobs.no_shows(desk.engine, now + timedelta(hours=1, minutes=30)) == 0  # still in the margin
    assert jobs.no_shows(desk.engine, now + timedelta(hours=2, minutes=1)) == 1
    assert _status(desk, visit["id"]) == "no_show"
    with read_session(desk.engine) as s:
        assert s.get(Credential, s.get(Visit, visit["id"]).qr_credential_id).revoked_at is not None
    assert desk.scan(token).json()["code"] == "token_expired"


@pytest.fixture
def cli_env(engine, tmp_path, monkeypatch):
    """`bookgate` on the test's database, with the same secret key (the audit chain's key)."""
    from config import get_settings

    secret = get_settings().effective_secret_key()
    monkeypatch.setenv("BOOKGATE_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("BOOKGATE_VAR_DIR", str(tmp_path / "cli-var"))
    monkeypatch.setenv("BOOKGATE_SECRET_KEY", secret)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_retention_purge_keeps_the_audit_chain_verifiable(desk: Desk, cli_env, capsys):
    visit = desk.invite(visitors=[{"name": "Paula Private", "email": "paula@example.org", "phone": "+33 1 23"}])
    desk.scan(desk.token(visit))
    desk.client.post(f"/api/v1/visits/{visit['id']}/check-out", headers=desk.reception)
    keep = desk.invite(visitors=[{"name": "Still Expected"}])  # an open visit is never purged
    now = utcnow()
    with write_session(desk.engine) as s:
        assert jobs.service.purge(s, now + timedelta(days=89), dry_run=False) == []
    assert cli_main(["vms", "purge", "--dry-run"]) == 0  # nothing is old enough today
    assert "would purge 0" in capsys.readouterr().out
    # 91 days on: the dry run lists Paula and changes nothing; the run empties her record.
    later = now + timedelta(days=91)
    with write_session(desk.engine) as s:
        listed = jobs.service.purge(s, later, dry_run=True)
    assert [i["visitor_id"] for i in listed] == [visit["visitor"]["id"]]
    with read_session(desk.engine) as s:
        assert s.get(Visitor, visit["visitor"]["id"]).name == "Paula Private"
    assert jobs.purge(desk.engine, later) == 1
    with read_session(desk.engine) as s:
        paula = s.get(Visitor, visit["visitor"]["id"])
        assert (paula.name, paula.email, paula.phone, paula.company) == ("", None, None, None)
        assert paula.purged_at is not None
        assert s.get(Visitor, keep["visitor"]["id"]).name == "Still Expected"
        pseudonym = s.get(User, paula.user_id)
        assert pseudonym.name == f"Visitor #{paula.id}" and pseudonym.password_hash is None
        rows = s.exec(select(audit.AuditEntry)).all()
        assert not any("Paula" in r.summary or "paula@" in r.summary for r in rows)
        assert audit.verify(s).ok
    assert cli_main(["audit", "verify"]) == 0
    assert "audit chain intact" in capsys.readouterr().out
