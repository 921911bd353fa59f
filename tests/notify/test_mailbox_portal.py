"""The demo's mail catcher and the admins' pages: what was sent is readable in the portal, and a
parked message can be sent again from there."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import update

from bookgate.demo import start_mail_catcher
from core.db import read_session, write_session
from core.outbox import OutboxMessage
from schedules.delivery import DeliveryWorker
from tests.notify.conftest import book, deliver, local
from tests.portal.test_manager_pages import signed_in


def test_demo_catcher_inbox_and_parked_messages(app, client, engine, settings, make_user, people):
    caught_settings, catcher = start_mail_catcher(settings)
    try:
        assert caught_settings.smtp_host == "127.0.0.1" and caught_settings.mail_catcher_dir
        app.state.settings = caught_settings  # the server as `bookgate demo` starts it
        worker = DeliveryWorker(engine, caught_settings, reminders=False)
        alice = people["alice"]
        start = local(3, 18)
        assert book(client, alice, "p-court", start, start + timedelta(hours=1)).status_code == 201
        deliver(worker)

        user, password = make_user({"role": "admin"}, name="Ada Admin")
        admin = signed_in(app, user, password)
        page = admin.get("/admin/mailbox")
        assert page.status_code == 200 and "Confirmed: Court" in page.text and alice.email in page.text
        key = page.text.split('href="/admin/mailbox/', 1)[1].split('"', 1)[0]
        message = admin.get(f"/admin/mailbox/{key}")
        assert message.status_code == 200
        assert "Your booking of Court is confirmed." in message.text and "reservation-" in message.text
        html = admin.get(f"/admin/mailbox/{key}/html")
        assert "<strong>Your booking of Court is confirmed.</strong>" in html.text
        assert html.headers["content-security-policy"].startswith("sandbox")
        assert admin.get("/admin/mailbox/..%2Fsecret_key").status_code == 404

        resident = signed_in(app, *make_user({"role": "resident", "site": "paris"}))
        assert resident.get("/admin/mailbox").status_code == 403
        assert resident.get(f"/admin/mailbox/{key}/html").status_code == 403

        # a parked message, sent again from the portal
        with write_session(engine) as s:
            s.exec(
                update(OutboxMessage).values(
                    done_at=None, failed_at=OutboxMessage.created_at, attempts=8, last_error="x"
                )
            )
        parked = admin.get("/admin/outbox")
        assert parked.status_code == 200 and "Send again" in parked.text
        r = admin.post("/admin/outbox/1/resend", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/admin/outbox?done=resent"
        with read_session(engine) as s:
            again = s.get(OutboxMessage, 1)
        assert again is not None and again.failed_at is None and again.attempts == 0
        assert resident.post("/admin/outbox/2/resend", follow_redirects=False).status_code == 403
        cross = admin.post("/admin/outbox/2/resend", headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403
    finally:
        catcher.stop()
