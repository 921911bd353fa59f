from __future__ import annotations

import threading
from datetime import timedelta

from sqlmodel import func, select

from bms.models import Reservation
from core.db import read_session, write_session
from core.outbox import OutboxMessage
from moderation.models import VenueDocument
from schedules.expiry import expire_pending
from tests.moderation.conftest import local, request_slot

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def _created(engine, rid):
    with read_session(engine) as s:
        return s.get(Reservation, rid).created_at


def test_pending_requests_expire_at_their_deadline(client, moderated, engine):
    far = request_slot(client, moderated["carol"], "p-court", local(10, 10), beneficiaries=[moderated["bob"].id])
    created = _created(engine, far["id"])
    assert expire_pending(engine, created + timedelta(hours=47)) == 0
    assert expire_pending(engine, created + timedelta(hours=48)) == 1  # the default pending_expiry_hours
    seen = client.get(f"/api/v1/reservations/{far['id']}", headers=moderated["carol"].headers).json()
    assert seen["status"] == "expired" and seen["status_reason"] == "no manager decided in time"
    with read_session(engine) as s:
        msg = s.exec(select(OutboxMessage).where(OutboxMessage.kind == "reservation.expired")).one()
    assert msg.payload["recipients"] == sorted([moderated["carol"].id, moderated["bob"].id])
    assert expire_pending(engine, created + timedelta(hours=49)) == 0
    r = client.post(f"/api/v1/moderation/{far['id']}/approve", json={}, headers=moderated["manager"].headers)
    assert r.status_code == 409


def test_deadline_is_capped_at_the_start(client, moderated, engine):
    start = local(0, 0) + timedelta(days=1, hours=2)
    soon = request_slot(client, moderated["carol"], "p-court", start)
    assert expire_pending(engine, start - timedelta(minutes=1)) == 0
    r = client.post(
        f"/api/v1/moderation/{soon['id']}/approve", json={}, headers=moderated["manager"].headers
    )  # still decidable before the start
    assert r.status_code == 200
    other = request_slot(client, moderated["alice"], "p-court", start + timedelta(hours=2))
    assert expire_pending(engine, start + timedelta(hours=2)) == 1
    assert client.get(f"/api/v1/reservations/{other['id']}", headers=moderated["alice"].headers).json()["status"] == (
        "expired"
    )


def test_expiry_runners_in_parallel_expire_each_request_once(client, moderated, engine):
    ids = [request_slot(client, moderated["carol"], "p-pool", local(10 + i, 10))["id"] for i in range(6)]
    later = _created(engine, ids[-1]) + timedelta(days=3)
    counts: list[int] = []
    barrier = threading.Barrier(3)

    def run():
        barrier.wait()
        counts.append(expire_pending(engine, later, batch=2))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(counts) == 6
    with read_session(engine) as s:
        kinds = s.exec(select(OutboxMessage.kind).where(OutboxMessage.kind == "reservation.expired")).all()
    assert len(kinds) == 6


def _upload(client, who, path, name, ctype, data, **form):
    return client.post(path, files={"file": (name, data, ctype)}, data=form, headers=who.headers)


def _stored(engine) -> int:
    with read_session(engine) as s:
        return s.exec(select(func.count()).select_from(VenueDocument)).one()


def test_documents_checked_stored_and_listed(client, moderated, engine):
    manager = moderated["manager"]
    r = _upload(
        client,
        manager,
        "/api/v1/moderation/venues/p-sports/documents",
        "rules.pdf",
        "application/pdf",
        PDF,
        kind="house_rules",
        title="House rules",
    )
    assert r.status_code == 201, r.text
    doc = r.json()
    r = _upload(
        client,
        manager,
        "/api/v1/moderation/resources/p-court/documents",
        "door.png",
        "image/png",
        PNG,
        kind="access_instructions",
    )
    assert r.status_code == 201, r.text
    listed = client.get("/api/v1/moderation/resources/p-court/documents", headers=moderated["alice"].headers).json()
    assert [(d["title"], d["resource"]) for d in listed] == [("House rules", None), ("door.png", "p-court")]
    assert (
        client.get("/api/v1/moderation/resources/p-court-b/documents", headers=manager.headers).json()[0]["id"]
        == doc["id"]
    )
    body = client.get(f"/api/v1/moderation/documents/{doc['id']}/content", headers=moderated["alice"].headers)
    assert body.status_code == 200 and body.content == PDF and body.headers["content-type"] == "application/pdf"
    assert (
        client.get(f"/api/v1/moderation/documents/{doc['id']}/content", headers=moderated["ny"].headers).status_code
        == 404
    )
    assert _stored(engine) == 2


def test_bad_uploads_are_refused_and_nothing_stored(client, moderated, engine):
    manager = moderated["manager"]
    path = "/api/v1/moderation/venues/p-sports/documents"
    cases = [
        ("big.pdf", "application/pdf", PDF + b"0" * (5 * 1024 * 1024), 413, "too_large"),
        ("notes.txt", "text/plain", b"hello", 415, "unsupported_type"),
        ("rules.pdf", "application/pdf", PNG, 415, "type_mismatch"),
        ("rules.png", "application/pdf", PDF, 415, "extension_mismatch"),
        ("empty.pdf", "application/pdf", b"", 422, "empty_file"),
    ]
    for name, ctype, data, status, code in cases:
        r = _upload(client, manager, path, name, ctype, data)
        assert (r.status_code, r.json()["code"]) == (status, code), name
    assert _upload(client, moderated["alice"], path, "r.pdf", "application/pdf", PDF).status_code == 404
    r = _upload(
        client, moderated["alice"], "/api/v1/moderation/resources/p-court/documents", "r.pdf", "application/pdf", PDF
    )
    assert r.status_code == 403
    assert _upload(client, moderated["other_manager"], path, "r.pdf", "application/pdf", PDF).status_code == 404
    assert _stored(engine) == 0


def test_the_server_clock_expires_overdue_requests(engine, moderated, tmp_path):
    """The periodic job runs inside the server: an overdue request expires without anyone calling it."""
    import time as _time

    from fastapi.testclient import TestClient

    from bookgate.app import create_app
    from config import Settings

    start = local(5, 10)
    settings = Settings(var_dir=tmp_path / "v2", scheduler=True, expiry_every_seconds=1, _env_file=None)
    app = create_app(settings, engine=engine, migrate_on_start=False)
    with TestClient(app) as c:
        made = c.post(
            "/api/v1/reservations",
            headers=moderated["alice"].headers,
            json={"resource": "p-court", "start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()},
        )
        assert made.status_code == 201 and made.json()["status"] == "pending"
        with write_session(engine) as s:  # make it two days old
            row = s.get(Reservation, made.json()["id"])
            row.created_at = row.created_at - timedelta(days=2)
            s.add(row)
        deadline = _time.monotonic() + 10
        status = "pending"
        while status == "pending" and _time.monotonic() < deadline:
            _time.sleep(0.2)
            status = c.get(f"/api/v1/reservations/{made.json()['id']}", headers=moderated["alice"].headers).json()[
                "status"
            ]
    assert status == "expired"
