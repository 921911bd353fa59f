"""The messages list: who hears of what, in which words; reminders with a controlled clock."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import col, select, update

from bms.models import Reservation
from core.db import read_session, utcnow, write_session
from core.outbox import OutboxMessage
from schedules.reminders import write_due_reminders
from tests.notify.conftest import book, deliver, local


def _text(mail) -> str:
    return mail.get_body(preferencelist=("plain",)).get_content()


def _manual(client, people, key: str = "p-court") -> None:
    r = client.patch(f"/api/v1/resources/{key}/rules", json={"moderation": "manual"}, headers=people["manager"].headers)
    assert r.status_code == 200, r.text


def test_request_reaches_requester_and_managers_then_rejection_with_reason(client, people, smtp, worker):
    _manual(client, people)
    alice, manager = people["alice"], people["manager"]
    start = local(3, 10)
    r = book(client, alice, "p-court", start, start + timedelta(hours=1))
    assert r.status_code == 201 and r.json()["status"] == "pending"
    deliver(worker)
    [received] = smtp.to(alice.email)
    assert received["Subject"] == "Request received: Court"
    [to_decide] = smtp.to(manager.email)
    assert to_decide["Subject"] == "To decide: Court" and "asks for Court" in _text(to_decide)
    assert smtp.to(people["other_manager"].email) == []  # another venue's manager hears nothing

    rid = r.json()["id"]
    r = client.post(
        f"/api/v1/moderation/{rid}/reject", json={"reason": "Court closed for repairs"}, headers=manager.headers
    )
    assert r.status_code == 200, r.text
    deliver(worker)
    rejected = smtp.to(alice.email)[-1]
    assert rejected["Subject"] == "Declined: Court"
    assert "Reason: Court closed for repairs" in _text(rejected)


def test_proposal_and_cancellation_with_cancelled_ics(client, people, smtp, worker):
    _manual(client, people)
    alice, manager = people["alice"], people["manager"]
    start = local(4, 10)
    rid = book(client, alice, "p-court", start, start + timedelta(hours=1)).json()["id"]
    later = start + timedelta(hours=3)
    r = client.post(
        f"/api/v1/moderation/{rid}/propose",
        json={"start": later.isoformat(), "end": (later + timedelta(hours=1)).isoformat(), "reason": "busy morning"},
        headers=manager.headers,
    )
    assert r.status_code in (200, 201), r.text
    deliver(worker)
    proposal = smtp.to(alice.email)[-1]
    assert proposal["Subject"] == "Another time proposed: Court"
    assert "13:00" in _text(proposal) and "busy morning" in _text(proposal)

    r = client.post(f"/api/v1/reservations/{rid}/cancel", json={"reason": "plans changed"}, headers=alice.headers)
    assert r.status_code == 200, r.text
    deliver(worker)
    cancelled = smtp.to(alice.email)[-1]
    assert cancelled["Subject"] == "Cancelled: Court"
    [ics] = [p for p in cancelled.iter_attachments() if p.get_content_type() == "text/calendar"]
    assert b"STATUS:CANCELLED" in ics.get_payload(decode=True)


def test_html_part_escapes_what_people_typed(client, people, smtp, worker):
    _manual(client, people)
    alice, manager = people["alice"], people["manager"]
    start = local(5, 10)
    rid = book(client, alice, "p-court", start, start + timedelta(hours=1)).json()["id"]
    client.post(f"/api/v1/moderation/{rid}/reject", json={"reason": "<script>x</script>"}, headers=manager.headers)
    deliver(worker)
    html = smtp.to(alice.email)[-1].get_body(preferencelist=("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html


def _outbox(engine, kind: str) -> list[OutboxMessage]:
    with read_session(engine) as s:
        return list(s.exec(select(OutboxMessage).where(col(OutboxMessage.kind) == kind)).all())


def test_reminders_24h_and_1h_once_each_and_opt_out(client, engine, people, smtp, worker):
    alice, bob = people["alice"], people["bob"]
    start = local(3, 18)
    rid = book(client, alice, "p-court", start, start + timedelta(hours=1), beneficiaries=[bob.id]).json()["id"]
    assert client.put("/api/v1/me/notifications", json={"reminders": False}, headers=bob.headers).json() == {
        "reminders": False
    }
    deliver(worker)
    before = len(smtp.to(alice.email))

    assert write_due_reminders(engine, start - timedelta(hours=25)) == 0
    assert write_due_reminders(engine, start - timedelta(hours=24) + timedelta(minutes=1)) == 1
    assert write_due_reminders(engine, start - timedelta(hours=23)) == 0  # written once
    deliver(worker)
    reminder = smtp.to(alice.email)[-1]
    assert len(smtp.to(alice.email)) == before + 1
    assert reminder["Subject"] == "Reminder: Court" and "starts in 24 hours" in _text(reminder)
    assert not [m for m in smtp.to(bob.email) if m["Subject"].startswith("Reminder")]  # bob opted out

    assert write_due_reminders(engine, start - timedelta(minutes=59)) == 1
    assert write_due_reminders(engine, start - timedelta(minutes=30)) == 0
    deliver(worker)
    assert "starts in 1 hour." in _text(smtp.to(alice.email)[-1])

    # a booking that moves is reminded again for its new time
    with write_session(engine) as s:
        s.exec(
            update(Reservation)
            .where(col(Reservation.id) == rid)
            .values(start=start + timedelta(days=1), end=start + timedelta(days=1, hours=1))
        )
    assert write_due_reminders(engine, start + timedelta(minutes=1)) == 1
    assert len(_outbox(engine, "reservation.reminder")) == 3


def test_late_booking_and_a_stopped_job_send_only_the_nearest_reminder(client, engine, people):
    alice = people["alice"]
    now = utcnow()
    soon = (now + timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)  # on the 30-minute grid
    r = book(client, alice, "p-court", soon, soon + timedelta(hours=1))
    assert r.status_code == 201, r.text
    # booked after its 24 h mark: no 24 h reminder; an hour before: the 1 h one
    assert write_due_reminders(engine, soon - timedelta(minutes=50)) == 1
    [row] = _outbox(engine, "reservation.reminder")
    assert row.payload["offset_minutes"] == 60

    start = local(6, 12)
    book(client, alice, "p-court", start, start + timedelta(hours=1))
    # the job was down for a day: only the nearest reminder, never a stale 24 h one
    assert write_due_reminders(engine, start - timedelta(minutes=20)) == 1
    assert sorted(m.payload["offset_minutes"] for m in _outbox(engine, "reservation.reminder")) == [60, 60]


def test_staff_hear_of_a_degraded_controller_and_a_key_not_returned(client, engine, people, make_user, smtp, worker):
    """Admins and the managers of the venues the controller serves; nobody else."""
    from core import outbox

    admin, _ = make_user({"role": "admin"})
    with write_session(engine) as s:
        outbox.enqueue(s, "controller.degraded", {"controller": "nowhere-ctl", "error": "TimeoutError: no answer"})
        outbox.enqueue(
            s,
            "access.key_overdue",
            {
                "controller": "nowhere-ctl",
                "door": "Car key 1",
                "holder": "Alice",
                "venue": "p-sports",
                "at": utcnow().isoformat(),
            },
        )
    deliver(worker)
    subjects = sorted(m["Subject"] for m in smtp.to(admin.email))
    assert subjects == ["Controller degraded: nowhere-ctl", "Key not returned: Car key 1"]
    [key] = smtp.to(people["manager"].email)  # p-sports' manager: the key; the controller serves none of theirs
    assert "Taken by: Alice" in _text(key)
    [degraded] = [m for m in smtp.to(admin.email) if m["Subject"].startswith("Controller degraded")]
    assert "Last error: TimeoutError: no answer" in _text(degraded)
    assert smtp.to(people["alice"].email) == []
