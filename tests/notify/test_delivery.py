"""Delivery end to end: a booking's confirmation reaches a real SMTP server with its .ics, a real
HTTP receiver verifies the webhook signature; failures retry, then park; a lost lease re-sends."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from datetime import timedelta

from icalendar import Calendar
from sqlmodel import col, select, update

from core import outbox
from core.audit import AuditEntry
from core.db import read_session, utcnow, write_session
from core.outbox import OutboxMessage
from notify import channels
from notify.messages import DELIVERY_KINDS, EMAIL
from tests.notify.conftest import book, deliver, local, wait_until
from tests.notify.ics_check import check_rfc5545


def _webhook(client, admin_headers, url: str, **extra) -> dict:
    r = client.post("/api/v1/webhooks", json={"site": "paris", "url": url, **extra}, headers=admin_headers)
    assert r.status_code == 201, r.text
    return r.json()


def _verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check, written from the documented scheme (not from the sender's code)."""
    parts = dict(item.split("=", 1) for item in headers["x-bookgate-signature"].split(","))
    if abs(time.time() - int(parts["t"])) > 300:
        return False
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


def _rows(engine, kind: str | None = None) -> list[OutboxMessage]:
    with read_session(engine) as s:
        stmt = select(OutboxMessage).order_by(col(OutboxMessage.id))
        if kind:
            stmt = stmt.where(col(OutboxMessage.kind) == kind)
        return list(s.exec(stmt).all())


def _due_now(engine) -> None:
    """Skip the backoff wait (the clock is not what these tests are about)."""
    with write_session(engine) as s:
        s.exec(update(OutboxMessage).values(available_at=utcnow() - timedelta(seconds=1)))


def test_confirmation_mail_with_ics_and_signed_webhook(client, engine, people, admin_headers, smtp, hooks, worker):
    hook = _webhook(client, admin_headers, hooks.url)
    alice = people["alice"]
    start = local(3, 18)
    r = book(client, alice, "p-court", start, start + timedelta(hours=1))
    assert r.status_code == 201, r.text
    rid = r.json()["id"]

    assert deliver(worker) >= 3  # the event, then its e-mail and its webhook call

    mails = smtp.to(alice.email)
    assert len(mails) == 1
    mail = mails[0]
    assert mail["Subject"] == "Confirmed: Court"
    assert mail["Message-ID"].startswith("<") and mail["Message-ID"].endswith("@bookgate>")
    text = mail.get_body(preferencelist=("plain",)).get_content()
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert "Your booking of Court is confirmed." in text
    assert "18:00" in text and "Europe/Paris" in text
    assert "<strong>Your booking of Court is confirmed.</strong>" in html
    [ics_part] = [p for p in mail.iter_attachments() if p.get_content_type() == "text/calendar"]
    raw = ics_part.get_payload(decode=True)
    check_rfc5545(raw)
    cal = Calendar.from_ical(raw)
    [ev] = cal.walk("VEVENT")
    assert str(ev["UID"]) == f"reservation-{rid}@bookgate"
    assert ev.decoded("DTSTART") == start
    assert ev["DTSTART"].params["TZID"] == "Europe/Paris"
    assert [str(tz["TZID"]) for tz in cal.walk("VTIMEZONE")] == ["Europe/Paris"]

    [(headers, body)] = hooks.requests
    assert _verify(hook["secret"], headers, body)
    assert not _verify("whsec_wrong", headers, body)
    sent = hooks.bodies()[0]
    assert sent["type"] == "reservation.confirmed"
    assert sent["id"].startswith("msg_") and headers["x-bookgate-message-id"] == sent["id"]
    assert sent["data"]["reservation_id"] == rid and sent["data"]["site"] == "paris"
    assert "recipients" not in sent["data"]
    # everything is settled: nothing is left to claim
    assert all(m.done_at is not None for m in _rows(engine))
    # the secret is stored encrypted, never in clear, and the listing does not show it
    assert hook["secret"] not in str(client.get("/api/v1/webhooks", headers=admin_headers).json())


def test_refused_booking_sends_nothing(client, engine, people, smtp, worker):
    alice, bob = people["alice"], people["carol"]
    start = local(4, 10)
    assert book(client, alice, "p-court", start, start + timedelta(hours=1)).status_code == 201
    refused = book(client, bob, "p-court", start, start + timedelta(hours=1))
    assert refused.status_code == 409
    deliver(worker)
    assert smtp.to(alice.email) and not smtp.to(bob.email)
    assert len(_rows(engine, "reservation.confirmed")) == 1


def test_refused_recipient_retries_alone_then_parks_and_resends(
    client, engine, people, admin_headers, smtp, worker, backend
):
    alice, bob = people["alice"], people["bob"]
    smtp.refuse.add(bob.email)
    start = local(5, 9)
    r = book(client, alice, "p-court", start, start + timedelta(hours=1), beneficiaries=[bob.id])
    assert r.status_code == 201, r.text
    deliver(worker)
    assert len(smtp.to(alice.email)) == 1 and smtp.to(bob.email) == []
    [bobs] = [m for m in _rows(engine, EMAIL) if m.payload["to"] == bob.email]
    assert bobs.done_at is None and bobs.attempts == 1 and "refused" in (bobs.last_error or "")
    assert bobs.available_at > utcnow()  # backoff

    for _ in range(2):  # delivery_max_attempts = 3
        _due_now(engine)
        deliver(worker)
    [bobs] = [m for m in _rows(engine, EMAIL) if m.payload["to"] == bob.email]
    assert bobs.failed_at is not None and bobs.attempts == 3
    assert len(smtp.to(alice.email)) == 1  # alice's copy never went out twice

    parked = client.get("/api/v1/outbox/parked", headers=admin_headers).json()
    assert [p["id"] for p in parked] == [bobs.id] and bob.email in parked[0]["summary"]
    resident = people["alice"].headers
    assert client.post(f"/api/v1/outbox/{bobs.id}/resend", headers=resident).status_code == 403

    smtp.refuse.clear()
    r = client.post(f"/api/v1/outbox/{bobs.id}/resend", headers=admin_headers)
    assert r.status_code == 200, r.text
    assert client.post(f"/api/v1/outbox/{bobs.id}/resend", headers=admin_headers).json()["code"] == "message_not_parked"
    deliver(worker)
    [mail] = smtp.to(bob.email)
    assert mail["Message-ID"] == bobs.payload["message_id"]
    with read_session(engine) as s:
        audited = s.exec(select(AuditEntry).where(col(AuditEntry.action) == "outbox.resend")).all()
    assert [a.object_id for a in audited] == [str(bobs.id)]


def test_smtp_down_loses_nothing(client, engine, people, smtp, worker, mail_settings):
    alice = people["alice"]
    worker.settings = mail_settings.model_copy(update={"smtp_port": 1})  # nothing listens there
    start = local(6, 9)
    assert book(client, alice, "p-court", start, start + timedelta(hours=1)).status_code == 201
    deliver(worker)
    [row] = _rows(engine, EMAIL)
    assert row.done_at is None and row.attempts == 1 and row.last_error
    worker.settings = mail_settings
    _due_now(engine)
    deliver(worker)
    assert len(smtp.to(alice.email)) == 1


def test_webhook_500_and_timeout_retry_with_the_same_id(client, engine, people, admin_headers, hooks, smtp, worker):
    _webhook(client, admin_headers, hooks.url, events=["reservation.confirmed"])
    hooks.answers = [500]
    alice = people["alice"]
    start = local(7, 9)
    assert book(client, alice, "p-court", start, start + timedelta(hours=1)).status_code == 201
    deliver(worker)
    [row] = _rows(engine, "notify.webhook")
    assert row.done_at is None and "HTTP 500" in (row.last_error or "")
    assert len(smtp.to(alice.email)) == 1  # the e-mail did not wait for the webhook

    hooks.delay = 1.0  # longer than webhook_timeout_seconds (0.5)
    _due_now(engine)
    deliver(worker)
    [row] = _rows(engine, "notify.webhook")
    assert row.done_at is None and row.attempts == 2 and "Timeout" in (row.last_error or "")

    hooks.delay = 0
    _due_now(engine)
    deliver(worker)
    bodies = hooks.bodies()
    # a timed-out request may still have landed: receivers tell copies apart by the id
    assert {b["id"] for b in bodies} == {f"msg_{_rows(engine, 'reservation.confirmed')[0].id}"}
    assert _rows(engine, "notify.webhook")[0].done_at is not None


def test_claimed_but_never_marked_goes_out_once_more(client, engine, people, smtp, worker, mail_settings):
    """A node sends, then dies before marking: after its lease another node sends again, once."""
    alice = people["alice"]
    start = local(8, 9)
    assert book(client, alice, "p-court", start, start + timedelta(hours=1)).status_code == 201
    worker.expand_events("expander")
    [claimed] = outbox.claim(engine, "dying-node", DELIVERY_KINDS, lease=timedelta(seconds=0.3))
    with channels.mailer(mail_settings) as m:
        m.send(claimed.payload)  # sent... and the node dies here, before mark_done
    assert deliver(worker, "survivor") == 0  # still leased to the dead node
    wait_until(lambda: deliver(worker, "survivor"), timeout=5)
    mails = smtp.to(alice.email)
    assert len(mails) == 2 and mails[0]["Message-ID"] == mails[1]["Message-ID"]
    time.sleep(0.35)  # past any lease: nothing is left to send again
    assert deliver(worker, "survivor") == 0 and len(smtp.to(alice.email)) == 2


def test_missing_translation_falls_back_to_english_logged_once(
    client, engine, people, smtp, worker, caplog, monkeypatch
):
    from core.models import User
    from notify import render

    monkeypatch.setattr(render, "_missing", set())  # "once" is per process; start this test afresh
    alice = people["alice"]
    with write_session(engine) as s:
        chosen = {"locale_chosen": True} if hasattr(User, "locale_chosen") else {}  # her own choice
        s.exec(update(User).where(col(User.id) == alice.id).values(locale="de", **chosen))
    caplog.set_level(logging.WARNING, logger="notify.render")
    for day in (9, 10):
        start = local(day, 9)
        assert book(client, alice, "p-court", start, start + timedelta(hours=1)).status_code == 201
    deliver(worker)
    mails = smtp.to(alice.email)
    assert len(mails) == 2
    for mail in mails:
        text = mail.get_body(preferencelist=("plain",)).get_content()
        assert "Court" in text and "Europe/Paris" in text
    warned = [r.getMessage() for r in caplog.records if "Your booking of {resource} is confirmed." in r.getMessage()]
    translated = "Your booking of Court is confirmed." not in mails[0].get_body(preferencelist=("plain",)).get_content()
    assert len(warned) == (0 if translated else 1)  # a German catalog may carry it; if not: logged once


def test_worker_thread_wakes_on_commit(client, engine, people, smtp, mail_settings):
    """Started as the server starts it: the commit of the booking wakes it, no poll needed."""
    from schedules.delivery import start_delivery

    slow_poll = mail_settings.model_copy(update={"delivery_every_seconds": 30})
    w = start_delivery(engine, slow_poll, reminders=False)
    try:
        time.sleep(0.2)  # let its first (empty) round pass
        alice = people["alice"]
        start = local(11, 9)
        began = time.monotonic()
        assert book(client, alice, "p-court", start, start + timedelta(hours=1)).status_code == 201
        wait_until(lambda: smtp.to(alice.email), timeout=5)
        assert time.monotonic() - began < 5
    finally:
        w.stop()


def test_a_commit_during_a_slow_round_is_taken_by_another_thread(
    client, engine, people, admin_headers, smtp, hooks, mail_settings
):
    """The first thread takes the wake-ups (so a stream of commits is gathered into its rounds),
    but not while it is stuck on a slow receiver: a booking then is mailed by another thread."""
    from schedules.delivery import start_delivery

    _webhook(client, admin_headers, hooks.url)
    hooks.delay = 8.0  # the first booking's webhook holds its thread that long
    slow = mail_settings.model_copy(update={"delivery_every_seconds": 30, "webhook_timeout_seconds": 20})
    w = start_delivery(engine, slow, reminders=False)
    try:
        time.sleep(0.2)  # the threads' first (empty) rounds
        alice, bob = people["alice"], people["bob"]
        assert book(client, alice, "p-court", local(11, 9), local(11, 10)).status_code == 201
        wait_until(lambda: smtp.to(alice.email), timeout=5)  # its round now waits on the webhook
        time.sleep(1.5)  # past SLOW_ROUND_S
        assert book(client, bob, "p-court", local(11, 11), local(11, 12)).status_code == 201
        wait_until(lambda: smtp.to(bob.email), timeout=5)
        assert not hooks.requests  # the first webhook is still on its way: another thread mailed Bob
    finally:
        hooks.delay = 0.0
        w.stop(timeout=25)


def test_admin_only_and_bad_input(client, people, admin_headers):
    alice = people["alice"].headers
    assert (
        client.post("/api/v1/webhooks", json={"site": "paris", "url": "http://x.example/h"}, headers=alice).status_code
        == 403
    )
    bad = client.post("/api/v1/webhooks", json={"site": "paris", "url": "ftp://x.example/h"}, headers=admin_headers)
    assert bad.status_code == 422
    bad = client.post(
        "/api/v1/webhooks",
        json={"site": "paris", "url": "http://x.example/h", "events": ["nope"]},
        headers=admin_headers,
    )
    assert bad.status_code == 422
    assert (
        client.post(
            "/api/v1/webhooks", json={"site": "nowhere", "url": "http://x.example/h"}, headers=admin_headers
        ).status_code
        == 404
    )
    assert client.post("/api/v1/outbox/999999/resend", headers=admin_headers).status_code == 404
    assert client.get("/api/v1/outbox/parked", headers=alice).status_code == 403


def test_without_smtp_no_mail_is_written_and_webhooks_still_go(client, engine, people, admin_headers, hooks, settings):
    from schedules.delivery import DeliveryWorker

    _webhook(client, admin_headers, hooks.url)
    w = DeliveryWorker(engine, settings, reminders=False)  # the default settings: no SMTP server
    try:
        start = local(12, 9)
        assert book(client, people["alice"], "p-court", start, start + timedelta(hours=1)).status_code == 201
        deliver(w)
    finally:
        w.stop()
    assert _rows(engine, EMAIL) == []  # nothing piles up to be parked
    assert [b["type"] for b in hooks.bodies()] == ["reservation.confirmed"]


def test_a_bad_event_is_retried_alone(client, engine, people, smtp, worker):
    alice = people["alice"]
    with write_session(engine) as s:
        outbox.enqueue(
            s,
            "reservation.changed",
            {"resource": "p-court", "start": "not a time", "end": "nor this", "recipients": [alice.id]},
        )
    start = local(13, 9)
    assert book(client, alice, "p-court", start, start + timedelta(hours=1)).status_code == 201
    deliver(worker)
    assert [m["Subject"] for m in smtp.to(alice.email)] == ["Confirmed: Court"]
    [bad] = _rows(engine, "reservation.changed")
    assert bad.done_at is None and bad.attempts == 1 and "ValueError" in (bad.last_error or "")
