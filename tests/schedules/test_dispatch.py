"""Transitions written with the booking, and the dispatcher that settles them (both databases)."""

from __future__ import annotations

import multiprocessing as mp
from datetime import timedelta

import pytest
from sqlmodel import func, select, update

from access.models import Controller, Door, Transition
from access.protocol import CommandResult, Grant, Revoke
from access.transitions import PRELOAD
from core.audit import AuditEntry
from core.db import make_engine, read_session, write_session
from core.outbox import OutboxMessage
from schedules.dispatch import dispatch_once
from tests.bms.conftest import local
from tests.conftest import login

pytestmark = pytest.mark.usefixtures("example_site")


@pytest.fixture
def booked(client, make_user):
    """Alice books court-1 in three days for Bob, whose badge is b0b0b0b0."""
    admin_user, apw = make_user({"role": "admin"})
    alice, pw = make_user({"role": "resident", "site": "les-tilleuls"}, name="Alice")
    bob, _ = make_user({"role": "resident", "site": "les-tilleuls"}, name="Bob")
    admin = login(client, admin_user.email, apw)
    client.post(f"/api/v1/users/{bob.id}/credentials", json={"kind": "badge", "value": "b0b0b0b0"}, headers=admin)
    headers = login(client, alice.email, pw)
    start = local(3, 18)
    r = client.post(
        "/api/v1/reservations",
        headers=headers,
        json={
            "resource": "court-1",
            "start": start.isoformat(),
            "end": (start + timedelta(hours=1)).isoformat(),
            "beneficiaries": [bob.id],
        },
    )
    assert r.status_code == 201, r.text
    return r.json(), headers


def _rows(engine):
    with read_session(engine) as s:
        return list(s.exec(select(Transition).order_by(Transition.due_at, Transition.id)).all())


def _gate_rows(engine, n: int, tag: str):  # type: ignore[no-untyped-def]
    """Replace every transition by `n` `open` rows at the court gate, due a second ago."""
    from core.db import utcnow

    with read_session(engine) as s:
        gate = s.exec(select(Door).where(Door.key == "court-gate")).one()
    with write_session(engine) as s:
        s.exec(Transition.__table__.delete())  # type: ignore[attr-defined]
        due = utcnow() - timedelta(seconds=1)
        s.add_all(
            Transition(controller_id=gate.controller_id, door_id=gate.id, action="open", due_at=due, source=f"{tag}{i}")
            for i in range(n)
        )


class Recorder:
    def __init__(self, ok: bool = True) -> None:
        self.sent: list = []
        self.ok = ok

    def __call__(self, key, command):
        self.sent.append((key, command))
        return CommandResult(command.command_id, self.ok, "" if self.ok else "no answer")


def test_booking_writes_its_transitions_and_cancelling_rewrites_them(client, engine, booked):
    res, headers = booked
    from datetime import datetime

    a_start, a_end = datetime.fromisoformat(res["access_start"]), datetime.fromisoformat(res["access_end"])
    rows = _rows(engine)
    assert [(t.action, t.due_at, t.status) for t in rows] == [
        ("grant", a_start - PRELOAD, "pending"),
        ("revoke", a_end, "pending"),
    ]
    with read_session(engine) as s:
        gate = s.exec(select(Door).where(Door.key == "court-gate")).one()
        ctl = s.exec(select(Controller).where(Controller.key == "courts-ctl")).one()
    assert {(t.door_id, t.controller_id, t.source) for t in rows} == {(gate.id, ctl.id, f"reservation:{res['id']}")}
    client.post(f"/api/v1/reservations/{res['id']}/cancel", json={}, headers=headers)
    assert _rows(engine) == []  # nothing was sent yet, so nothing needs undoing


def test_dispatch_grants_ahead_then_revokes_and_late_grants_become_revokes(client, engine, booked):
    res, headers = booked
    from datetime import datetime

    a_start, a_end = datetime.fromisoformat(res["access_start"]), datetime.fromisoformat(res["access_end"])
    send = Recorder()
    assert dispatch_once(engine, send, now=a_start - PRELOAD - timedelta(minutes=1)) == 0  # nothing due yet
    assert dispatch_once(engine, send, now=a_start - timedelta(hours=1)) == 1
    key, grant = send.sent[-1]
    assert key == "courts-ctl" and isinstance(grant, Grant)
    assert (grant.credential_uid, grant.valid_from, grant.valid_until) == ("b0b0b0b0", a_start, a_end)
    assert dispatch_once(engine, send, now=a_end + timedelta(seconds=1)) == 1
    assert isinstance(send.sent[-1][1], Revoke) and send.sent[-1][1].credential_uid == "b0b0b0b0"
    assert {t.status for t in _rows(engine)} == {"done"}

    # Cancelling after the grant went out settles the badge at once. Bob's first booking still uses
    # the same gate, so the settled state is that booking's window, not a bare revoke.
    start2 = local(4, 18)
    r2 = client.post(
        "/api/v1/reservations",
        headers=headers,
        json={
            "resource": "court-2",
            "start": start2.isoformat(),
            "end": (start2 + timedelta(hours=1)).isoformat(),
            "beneficiaries": res["beneficiaries"],
        },
    ).json()
    dispatch_once(engine, send, now=datetime.fromisoformat(r2["access_start"]) - timedelta(hours=1))
    client.post(f"/api/v1/reservations/{r2['id']}/cancel", json={}, headers=headers)
    late = Recorder()
    dispatch_once(engine, late)
    assert [type(c).__name__ for _, c in late.sent] == ["Grant"]
    assert (late.sent[0][1].valid_from, late.sent[0][1].valid_until) == (a_start, a_end)


def test_a_cancel_landing_while_the_grant_is_in_flight_ends_with_the_card_gone(client, engine, booked):
    """The grant is claimed and on the wire, its acknowledgement held back, when the booking is
    cancelled: whatever may have been sent must be settled by a revoke."""
    res, headers = booked
    from datetime import datetime

    a_start = datetime.fromisoformat(res["access_start"])
    sent: list = []

    def send_while_cancelled(key, command):
        sent.append(command)
        if isinstance(command, Grant):  # before the device's acknowledgement comes back
            r = client.post(f"/api/v1/reservations/{res['id']}/cancel", json={}, headers=headers)
            assert r.status_code == 200, r.text
            with read_session(engine) as s:
                pending = s.exec(select(Transition).where(Transition.status == "pending")).all()
            assert [t.action for t in pending if t.claimed_by is None] == ["revoke"]  # planned behind it
            # a second dispatcher (another node) must not overtake the grant still in flight
            assert dispatch_once(engine, Recorder(), now=at) == 0
        return CommandResult(command.command_id, True, "acknowledged")

    at = a_start - timedelta(hours=1)
    dispatch_once(engine, send_while_cancelled, now=at)
    assert [type(c).__name__ for c in sent] == ["Grant", "Revoke"]
    assert sent[1].credential_uid == "b0b0b0b0"
    assert {t.status for t in _rows(engine)} == {"done"}


def test_a_gateway_down_through_the_window_ends_revoked(engine, booked):
    res, _ = booked
    from datetime import datetime

    send = Recorder()
    dispatch_once(engine, send, now=datetime.fromisoformat(res["access_end"]) + timedelta(hours=1))
    # Both transitions were overdue: the state decides (the window is over), and the two rows of
    # one badge at one door collapse into a single command.
    assert [type(c).__name__ for _, c in send.sent] == ["Revoke"]
    assert [t.status for t in _rows(engine)] == ["done", "done"]


def test_failures_retry_with_backoff_and_give_up(engine, booked):
    res, _ = booked
    from datetime import datetime

    at = datetime.fromisoformat(res["access_start"]) - timedelta(hours=1)
    down = Recorder(ok=False)
    assert dispatch_once(engine, down, now=at) == 0
    grant = next(t for t in _rows(engine) if t.action == "grant")
    assert grant.status == "pending" and grant.attempts == 1 and grant.due_at > at and grant.last_error
    for i in range(10):
        dispatch_once(engine, down, now=at + timedelta(minutes=10 * (i + 1)))
    grant = next(t for t in _rows(engine) if t.action == "grant")
    assert grant.status == "failed" and grant.attempts == 6
    ids = [c.command_id for _, c in down.sent]  # every attempt is a command of its own
    assert len(ids) >= 6 and len(set(ids)) == len(ids)
    assert all(c.command_id.startswith(f"t{grant.id}-") for _, c in down.sent if isinstance(c, Grant))
    with read_session(engine) as s:
        assert s.exec(select(Controller).where(Controller.key == "courts-ctl")).one().state == "degraded"
        alert = s.exec(select(AuditEntry).where(AuditEntry.action == "controller.degraded")).one()
    assert alert.object_id == "courts-ctl"
    with read_session(engine) as s:  # and a message for the people who look after it
        told = s.exec(select(OutboxMessage).where(OutboxMessage.kind == "controller.degraded")).one()
    assert told.payload["controller"] == "courts-ctl"


def _worker(url: str, out: mp.Queue) -> None:
    engine = make_engine(url)
    out.put(dispatch_once(engine, lambda k, c: CommandResult(c.command_id, True), limit=100))
    engine.dispose()


def test_two_dispatchers_share_5000_due_transitions(engine, booked):
    _gate_rows(engine, 5000, "bench:")
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    url = engine.url.render_as_string(hide_password=False)
    procs = [ctx.Process(target=_worker, args=(url, out)) for _ in range(2)]
    for p in procs:
        p.start()
    counts = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert sum(counts) == 5000
    with read_session(engine) as s:
        assert s.exec(select(func.count()).select_from(Transition).where(Transition.status == "done")).one() == 5000
        assert s.exec(select(func.max(Transition.attempts))).one() == 1  # nobody claimed a row twice


def test_a_window_across_the_spring_change_keeps_its_real_instants(client, engine, make_user):
    """Europe/Paris skips 02:00-03:00 on 2027-03-28: a 01:30-03:30 booking lasts one real hour,
    and the controller gets exactly that hour, widened by the court's 10 and 5 minutes."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    paris = ZoneInfo("Europe/Paris")
    admin_user, apw = make_user({"role": "admin"})
    alice, pw = make_user({"role": "resident", "site": "les-tilleuls"})
    admin = login(client, admin_user.email, apw)
    all_day = {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    r = client.patch(
        "/api/v1/resources/court-1/rules", json={"opening_hours": all_day, "notice_max_days": 400}, headers=admin
    )
    assert r.status_code == 200, r.text
    client.post(f"/api/v1/users/{alice.id}/credentials", json={"kind": "badge", "value": "d57d57d5"}, headers=admin)
    start = datetime(2027, 3, 28, 1, 30, tzinfo=paris)
    end = datetime(2027, 3, 28, 3, 30, tzinfo=paris)
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=1)  # one real hour
    res = client.post(
        "/api/v1/reservations",
        headers=login(client, alice.email, pw),
        json={"resource": "court-1", "start": start.isoformat(), "end": end.isoformat()},
    )
    assert res.status_code == 201, res.text
    body = res.json()
    assert datetime.fromisoformat(body["access_start"]) == datetime(2027, 3, 28, 0, 20, tzinfo=UTC)
    assert datetime.fromisoformat(body["access_end"]) == datetime(2027, 3, 28, 1, 35, tzinfo=UTC)
    send = Recorder()
    dispatch_once(engine, send, now=datetime(2027, 3, 27, 0, 20, tzinfo=UTC))  # due 24 h ahead
    _, grant = send.sent[-1]
    assert (grant.valid_from, grant.valid_until) == (
        datetime(2027, 3, 28, 0, 20, tzinfo=UTC),
        datetime(2027, 3, 28, 1, 35, tzinfo=UTC),
    )


def test_a_free_window_holds_the_door_released_then_locks_it_again(client, engine, make_user):
    """`free` mode: no card at all; the door's output is held released for the window, and the
    controller is told when to lock again (and is told to lock at the end)."""
    from datetime import datetime

    from access.protocol import HoldOpen
    from bms.models import Resource

    with write_session(engine) as s:
        court = s.exec(select(Resource).where(Resource.key == "court-2")).one()
        court.access = {**(court.access or {}), "mode": "free"}
        s.add(court)
    alice, pw = make_user({"role": "resident", "site": "les-tilleuls"}, name="Alice")
    start = local(4, 10)
    r = client.post(
        "/api/v1/reservations",
        headers=login(client, alice.email, pw),
        json={"resource": "court-2", "start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()},
    )
    assert r.status_code == 201, r.text
    res = r.json()
    access_start, access_end = (datetime.fromisoformat(res[k]) for k in ("access_start", "access_end"))
    rows = _rows(engine)
    assert {t.action for t in rows} == {"open", "close"} and all(t.credential_id is None for t in rows)

    during = Recorder()
    dispatch_once(engine, during, now=access_start + timedelta(minutes=1))
    assert [(key, type(c).__name__, c.until) for key, c in during.sent] == [("courts-ctl", "HoldOpen", access_end)]

    after = Recorder()
    dispatch_once(engine, after, now=access_end + timedelta(minutes=1))
    assert [(key, c) for key, c in after.sent if not isinstance(c, HoldOpen) or c.until is not None] == []
    assert [type(c).__name__ for _, c in after.sent] == ["HoldOpen"]  # lock again: until=None
    assert all(t.status == "done" for t in _rows(engine))


def test_a_commit_during_a_dispatch_run_is_sent_when_the_run_ends(client, engine, booked):
    """A cancellation committed while the grant is on the wire (its wake-up falls during the run)
    gets its revoke right after that batch, long before the (here 60 s) safety-net poll."""
    import threading
    import time

    from core.db import utcnow
    from schedules.clock import start_clock

    res, headers = booked
    with write_session(engine) as s:  # the grant falls due now (instead of a day before the window)
        s.exec(update(Transition).where(Transition.action == "grant").values(due_at=utcnow()))
    first_batch, release = threading.Event(), threading.Event()
    sent: list[tuple[float, str]] = []

    def send_many(pairs):  # type: ignore[no-untyped-def]
        if not first_batch.is_set():
            first_batch.set()
            release.wait(10)  # the controller is slow to answer the first batch
        sent.extend((time.monotonic(), type(c).__name__) for _, c in pairs)
        return [CommandResult(c.command_id, True, "") for _, c in pairs]

    clock = start_clock(engine, send_many=send_many, dispatch_every_seconds=60)
    try:
        assert first_batch.wait(10)
        r = client.post(f"/api/v1/reservations/{res['id']}/cancel", headers=headers, json={})
        assert r.status_code == 200, r.text  # committed mid-run: its revoke is due at once
        released_at = time.monotonic()
        release.set()
        deadline = time.monotonic() + 10
        while len(sent) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [name for _, name in sent] == ["Grant", "Revoke"]
        assert sent[1][0] - released_at < 3  # not the 60 s safety net
    finally:
        release.set()
        clock.shutdown(wait=True)


def test_the_next_batch_is_claimed_and_sent_while_the_previous_one_waits(engine, booked):
    """Pipelined (`pipeline=2`): batch n+1 goes out while batch n waits for its acknowledgements;
    two rows of one door never have commands in flight together, and nothing is sent twice."""
    import threading
    import time

    from core.db import utcnow

    with read_session(engine) as s:
        doors = {
            d.key: d
            for d in s.exec(select(Door).where(Door.key.in_(["lobby-door", "court-gate", "garage-gate"]))).all()
        }
    order = ["lobby-door", "court-gate", "lobby-door", "garage-gate"]  # by due time
    with write_session(engine) as s:
        s.exec(Transition.__table__.delete())  # type: ignore[attr-defined]
        now = utcnow()
        for i, key in enumerate(order):
            door = doors[key]
            s.add(
                Transition(
                    controller_id=door.controller_id,
                    door_id=door.id,
                    action="open",
                    due_at=now - timedelta(seconds=10 - i),
                    source=f"test:{i}",
                )
            )
    lock = threading.Lock()
    second = threading.Event()
    calls: list[dict] = []

    def send_many(pairs):  # type: ignore[no-untyped-def]
        with lock:
            n = len(calls)
            call = {"start": time.monotonic(), "commands": [c.command_id for _, c in pairs]}
            calls.append(call)
        if n == 0:
            call["overlapped"] = second.wait(5)  # the next batch arrives while this one is out
        elif n == 1:
            second.set()
        time.sleep(0.05)
        call["end"] = time.monotonic()
        return [CommandResult(c.command_id, True, "") for _, c in pairs]

    assert dispatch_once(engine, send_many=send_many, limit=1, now=utcnow(), pipeline=2) == 4
    assert calls[0]["overlapped"] is True
    assert len(calls) == 4 and len({c for call in calls for c in call["commands"]}) == 4
    rows = _rows(engine)
    assert {t.status for t in rows} == {"done"} and {t.attempts for t in rows} == {1}
    lobby = [call for call, key in zip(calls, order, strict=True) if key == "lobby-door"]
    assert lobby[1]["start"] >= lobby[0]["end"]  # the second lobby row waited for the first


def test_a_batch_on_the_wire_longer_than_its_lease_keeps_its_claim(engine, booked):
    """A slow controller holds a batch past its lease: the lease is renewed while the batch waits,
    so neither the next batch of this dispatcher nor another node sends those rows again; once the
    batch is settled nothing is left renewing."""
    import threading
    import time

    from core.db import utcnow
    from schedules.dispatch import claim_due

    _gate_rows(engine, 20, "t:")
    lease = timedelta(seconds=0.6)
    other_node: list = []

    def slow(pairs):  # type: ignore[no-untyped-def]
        time.sleep(lease.total_seconds() * 3)  # three leases long
        other_node.extend(claim_due(engine, "other-node", utcnow(), lease=lease))
        return [CommandResult(c.command_id, True, "") for _, c in pairs]

    assert dispatch_once(engine, send_many=slow, lease=lease, limit=10, pipeline=2) == 20
    assert other_node == []
    rows = _rows(engine)
    assert {t.status for t in rows} == {"done"} and {t.attempts for t in rows} == {1}
    assert {t.claimed_until for t in rows} == {None}
    assert not [t for t in threading.enumerate() if t.name == "dispatch-leases"]


def test_the_claim_of_a_node_that_stopped_renewing_comes_back(engine, booked):
    from core.db import utcnow
    from schedules.dispatch import claim_due, renew_leases

    _gate_rows(engine, 1, "t:")
    now = utcnow()
    dead = claim_due(engine, "dead-node", now, lease=timedelta(seconds=30))
    assert len(dead) == 1
    assert renew_leases(engine, "live-node", [dead[0].id], now + timedelta(hours=1)) == 0  # not its row
    assert claim_due(engine, "live-node", now + timedelta(seconds=10)) == []
    taken = claim_due(engine, "live-node", now + timedelta(seconds=31))
    assert [d.id for d in taken] == [dead[0].id] and taken[0].attempts == 2
