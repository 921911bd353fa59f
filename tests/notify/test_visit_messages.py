"""Visitors' messages go out through delivery too: the invitation (with its QR code, drawn when
sending, never stored) to the visitor's address; the closing-time roll to the site's reception."""

from __future__ import annotations

import struct
from datetime import timedelta

from sqlmodel import select

from core import outbox
from core.db import read_session, utcnow, write_session
from core.outbox import OutboxMessage
from tests.notify.conftest import deliver, local
from vms.models import Visit
from vms.service import visit_token


def test_invitation_reaches_the_visitor_with_its_code(client, engine, people, smtp, worker):
    alice = people["alice"]
    start = local(2, 10)
    r = client.post(
        "/api/v1/visits",
        json={
            "site": "paris",
            "visitors": [{"name": "Victor Visitor", "email": "victor@example.net"}],
            "start": start.isoformat(),
            "end": (start + timedelta(hours=2)).isoformat(),
        },
        headers=alice.headers,
    )
    assert r.status_code == 201, r.text
    deliver(worker)
    [mail] = smtp.to("victor@example.net")
    assert mail["Subject"] == "Invitation: Paris test residence"
    text = mail.get_body(preferencelist=("plain",)).get_content()
    assert "Hello Victor Visitor," in text and "invites you to Paris test residence" in text and "10:00" in text
    [png] = [p for p in mail.iter_attachments() if p.get_content_type() == "image/png"]
    image = png.get_payload(decode=True)
    assert image[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">I", image[16:20])[0] > 50
    with read_session(engine) as s:
        visit = s.get(Visit, r.json()[0]["id"])
        token = visit_token(visit)
        stored = " ".join(str(m.payload) for m in s.exec(select(OutboxMessage)).all())
    assert token and token not in stored  # the code's secret is drawn when sending, never stored


def test_closing_roll_goes_to_the_sites_reception(client, engine, make_user, people, smtp, worker):
    desk, _ = make_user({"role": "reception", "site": "paris"}, name="Rita Reception")
    other, _ = make_user({"role": "reception", "site": "newyork"})
    with write_session(engine) as s:
        outbox.enqueue(
            s,
            "visit.on_site_at_closing",
            {
                "site": "Paris test residence",
                "site_key": "paris",
                "to_role": "reception",
                "visitors": [{"visit_id": 1, "visitor_name": "Victor Visitor", "checked_in_at": utcnow().isoformat()}],
                "at": utcnow().isoformat(),
            },
        )
    deliver(worker)
    [mail] = smtp.to(desk.email)
    assert mail["Subject"] == "Still on site at closing: Paris test residence"
    assert "Victor Visitor" in mail.get_body(preferencelist=("plain",)).get_content()
    assert smtp.to(other.email) == []
