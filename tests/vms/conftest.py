"""A site with a reception desk and a host who may open the courts gate, and helpers to invite,
read QR codes back with an independent decoder (zxing-cpp) and count audit rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import png
import pytest
import zxingcpp
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import col, select

from access.models import Door
from access.windows import set_windows
from core.audit import AuditEntry
from core.db import ident, read_session, utcnow, write_session
from tests.conftest import login

SITE = "les-tilleuls"


def decode_qr(image: bytes) -> str:
    """The text of the one QR code in a PNG, read by zxing-cpp from the raw pixels (no Pillow)."""
    width, height, rows, info = png.Reader(bytes=image).asDirect()
    top = (1 << info["bitdepth"]) - 1
    planes = info["planes"]
    grey = bytearray()
    for row in rows:
        values = list(row)
        grey.extend(values[i] * 255 // top for i in range(0, len(values), planes))
    found = zxingcpp.read_barcodes(memoryview(bytes(grey)).cast("B", (height, width)))
    assert len(found) == 1, f"{len(found)} codes found"
    assert found[0].format == zxingcpp.BarcodeFormat.QRCode
    return found[0].text


@dataclass
class Desk:
    client: TestClient
    engine: Engine
    admin: dict[str, str]
    reception: dict[str, str]
    host: dict[str, str]
    host_id: int
    gate_id: int

    def invite(self, *, start: datetime | None = None, end: datetime | None = None, **extra: Any) -> dict:
        now = utcnow()
        body = {
            "site": SITE,
            "visitors": [{"name": "Vera Visitor", "email": "vera@example.org", "company": "Acme"}],
            "start": (start or now - timedelta(minutes=10)).isoformat(),
            "end": (end or now + timedelta(hours=2)).isoformat(),
            "purpose": "tennis lesson",
            **extra,
        }
        r = self.client.post("/api/v1/visits", json=body, headers=self.host)
        assert r.status_code == 201, r.text
        return r.json()[0]

    def token(self, visit: dict) -> str:
        r = self.client.get(visit["qr_png"], headers=self.host)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        return decode_qr(r.content)

    def scan(self, token: str, **extra: Any):
        return self.client.post("/api/v1/visits/check-in", json={"token": token, **extra}, headers=self.reception)

    def audit_actions(self, action: str) -> list[AuditEntry]:
        with read_session(self.engine) as s:
            return list(s.exec(select(AuditEntry).where(col(AuditEntry.action) == action).order_by(col(AuditEntry.id))))


@pytest.fixture
def desk(client, engine, make_user, example_site) -> Desk:
    admin_user, apw = make_user({"role": "admin"})
    rita, rpw = make_user({"role": "reception", "site": SITE}, name="Rita Reception")
    hugo, hpw = make_user({"role": "resident", "site": SITE}, name="Hugo Host")
    with write_session(engine) as s:
        gate = s.exec(select(Door).where(col(Door.key) == "court-gate")).one()
        now = utcnow()
        # Hugo's standing access to the courts gate (as an access level would write it).
        set_windows(
            s,
            "level",
            900,
            None,
            [ident(hugo)],
            now - timedelta(days=1),
            now + timedelta(days=400),
            "badge",
            active=True,
            door_ids=[ident(gate)],
        )
        gate_id = ident(gate)
    return Desk(
        client,
        engine,
        login(client, admin_user.email, apw),
        login(client, rita.email, rpw),
        login(client, hugo.email, hpw),
        ident(hugo),
        gate_id,
    )
