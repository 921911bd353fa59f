"""The lean booking path: a new booking is written in a dozen statements, nothing read back, and
what it writes (reservation, beneficiaries, access windows, transitions, outbox, audit) and
answers is exactly what the general paths (re-planning its source, `public`) give."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event
from sqlmodel import select

from access.models import AccessWindow, Credential, Transition
from access.protocol import compact_hex
from access.transitions import plan_source
from bms import service
from bms.queries import public
from core import audit
from core.auth import Principal
from core.db import read_session, utcnow, write_session
from core.models import Site
from core.outbox import OutboxMessage
from tests.bms.conftest import local

pytestmark = pytest.mark.usefixtures("example_site")

# What a booking of court-1 (doors, a time budget for its group) reads and writes: context,
# planner, active count, the group's budget, open waitlist offers, overlap check, reservation,
# window, access change, doors, credentials, transitions, outbox, audit. The path before took 24
# (26 on PostgreSQL). PostgreSQL adds the lock on the people a household budget counts.
MAX_STATEMENTS = {"sqlite": 14, "postgresql": 15}


@pytest.fixture
def residents(engine, make_user):
    with read_session(engine) as s:
        site_id = s.exec(select(Site.id).where(Site.key == "les-tilleuls")).one()
    people = []
    for i in range(2):
        user = make_user({"role": "resident", "site": "les-tilleuls"})[0]
        with write_session(engine) as s:
            value = f"0a0b0c{i:02x}"
            s.add(Credential(user_id=user.id, kind="badge", format="uid", value=value, compact=compact_hex(value)))
        people.append(Principal(user.id, user.email, user.name, "en", resident_sites=frozenset({site_id})))
    return people


def _count(engine) -> list[str]:
    seen: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if not statement.startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE", "ROLLBACK")):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    return seen


def _request(hours: int, **extra):  # type: ignore[no-untyped-def]
    start = local(1, 9) + timedelta(hours=hours)  # inside the courts' opening hours
    return service.ReservationCreate(resource="court-1", start=start, end=start + timedelta(hours=1), **extra)


def test_a_booking_takes_a_dozen_statements(engine, residents):
    seen = _count(engine)
    with write_session(engine) as s:
        service.create_once(s, residents[0], _request(0), None)
    assert 0 < len(seen) <= MAX_STATEMENTS[engine.dialect.name], "\n".join(seen)
    assert not any(stmt.lstrip().upper().startswith(("UPDATE", "DELETE")) for stmt in seen)
    assert not any("pg_advisory" in stmt for stmt in seen)  # no lock for the audit row


def test_what_it_writes_is_what_the_general_paths_write(engine, residents):
    planner, friend = residents
    with write_session(engine) as s:
        answer = service.create_once(s, planner, _request(2, beneficiaries=[friend.user_id]), None)
    assert isinstance(answer, service.ReservationPublic)
    rid = answer.id
    source = f"reservation:{rid}"
    with read_session(engine) as s:
        r = s.get(service.Reservation, rid)
        assert answer == public(s, r)
        windows = s.exec(select(AccessWindow).where(AccessWindow.source_id == rid)).all()
        lean = sorted(
            (t.door_id, t.credential_id, t.action, t.due_at, t.status)
            for t in s.exec(select(Transition).where(Transition.source == source)).all()
        )
        kinds = [m.kind for m in s.exec(select(OutboxMessage)).all()]
        row = s.exec(
            select(audit.AuditEntry).where(
                audit.AuditEntry.object_id == str(rid), audit.AuditEntry.action == "reservation.create"
            )
        ).one()
    assert [(w.user_id, w.start, w.end) for w in windows] == [(friend.user_id, r.access_start, r.access_end)]
    assert lean and {c for _, c, *_ in lean} == {_credential_of(engine, friend.user_id)}
    assert kinds[-1] == "reservation.confirmed"
    assert row.seq is None and row.mac  # appended unlinked, with its MAC
    # re-planned by the general path, the source's transitions come out the same
    with write_session(engine) as s:
        plan_source(s, "reservation", rid, now=utcnow())
    with read_session(engine) as s:
        general = sorted(
            (t.door_id, t.credential_id, t.action, t.due_at, t.status)
            for t in s.exec(select(Transition).where(Transition.source == source)).all()
        )
        assert audit.verify(s).ok
    assert [t[:3] for t in general] == [t[:3] for t in lean]


def _credential_of(engine, user_id: int) -> int:  # type: ignore[no-untyped-def]
    with read_session(engine) as s:
        return s.exec(select(Credential.id).where(Credential.user_id == user_id)).one()  # type: ignore[return-value]


def test_the_slot_stays_single_and_the_refusal_unchanged(engine, residents):
    with write_session(engine) as s:
        service.create_once(s, residents[0], _request(4), None)
    with pytest.raises(service.Conflict) as refused, write_session(engine) as s:
        service.create_once(s, residents[1], _request(4), None)
    assert refused.value.code == "slot_taken" and refused.value.extra["conflicting_window"] is not None
