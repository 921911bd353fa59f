"""Access levels: standing access on a weekly schedule in the site's zone, held by residents by
default and by whom admins assign; the decision index agrees with the pure definition; the API
refuses bad schedules and foreign doors; a manager's extra door follows its booking (both databases)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from access import levels
from access.decisions import DecisionIndex, note_doors
from access.desired import Cred, Level, ScheduleError, Window, desired_state, level_intervals, may_enter
from access.models import (
    AccessLevel,
    AccessLevelHolder,
    AccessWindow,
    Controller,
    Credential,
    Door,
    DoorResource,
    ExtraDoor,
    Transition,
)
from access.protocol import compact_hex
from access.service import state_for_doors
from access.windows import replan_user, set_windows
from bms.models import Resource
from core.audit import AuditEntry
from core.db import ident, read_session, utcnow, write_session
from core.models import Site
from tests.conftest import login

pytestmark = pytest.mark.usefixtures("example_site")

PARIS = ZoneInfo("Europe/Paris")
WEEKDAYS_6_9 = {d: ["06:00-09:00"] for d in ("mon", "tue", "wed", "thu", "fri")}


def _id(s, model, key):
    return s.exec(select(model).where(model.key == key)).one().id


def _level(s, key: str) -> AccessLevel:
    return s.exec(select(AccessLevel).where(AccessLevel.key == key)).one()


def _badge(engine, user_id: int, value: str) -> int:
    with write_session(engine) as s:
        cred = Credential(user_id=user_id, kind="badge", format="uid", value=value, compact=compact_hex(value))
        s.add(cred)
        s.flush()
        return ident(cred)


def _local(d: date, hour: int, minute: int = 0) -> datetime:
    return datetime(d.year, d.month, d.day, hour, minute, tzinfo=PARIS).astimezone(UTC)


# ---------------------------------------------------------------- the pure expansion


def test_a_schedule_is_checked_for_inversion_overlap_and_days():
    level = Level((1,), {"mon": ["09:00-06:00"]}, "Europe/Paris")
    with pytest.raises(ScheduleError) as exc:
        level_intervals(level, utcnow(), utcnow() + timedelta(days=7))
    assert exc.value.reason == "inverted_interval"
    with pytest.raises(ScheduleError) as exc:
        level_intervals(Level((1,), {"mon": ["06:00-09:00", "08:00-10:00"]}, "Europe/Paris"), utcnow(), utcnow())
    assert exc.value.reason == "overlapping_intervals"
    with pytest.raises(ScheduleError) as exc:
        level_intervals(Level((1,), {"monday": ["06:00-09:00"]}, "Europe/Paris"), utcnow(), utcnow())
    assert exc.value.reason == "invalid_weekday"
    touching = Level((1,), {"mon": ["06:00-09:00", "09:00-10:00"], "tue": ["00:00-24:00"]}, "Europe/Paris")
    monday = date(2027, 3, 29)
    # ranges that touch, and a day that runs into the next, are one interval
    assert level_intervals(touching, _local(monday, 0), _local(monday, 23)) == [(_local(monday, 6), _local(monday, 10))]
    assert level_intervals(touching, _local(monday, 12), _local(monday, 13)) == []


def test_schedule_edges_stay_on_the_wall_clock_across_dst():
    cleaning = Level((1,), WEEKDAYS_6_9, "Europe/Paris", exceptions=frozenset({date(2027, 3, 31)}))
    friday, monday = date(2027, 3, 26), date(2027, 3, 29)  # Paris springs forward on Sunday 28 March
    got = level_intervals(cleaning, _local(friday, 0), _local(date(2027, 4, 1), 0))
    assert got == [
        (datetime(2027, 3, 26, 5, 0, tzinfo=UTC), datetime(2027, 3, 26, 8, 0, tzinfo=UTC)),  # CET: UTC+1
        (datetime(2027, 3, 29, 4, 0, tzinfo=UTC), datetime(2027, 3, 29, 7, 0, tzinfo=UTC)),  # CEST: UTC+2
        (_local(date(2027, 3, 30), 6), _local(date(2027, 3, 30), 9)),
        # Wednesday 31 is an exception
    ]
    assert got[1] == (_local(monday, 6), _local(monday, 9))
    bounded = Level((1,), {"mon": ["00:00-24:00"]}, "Europe/Paris", valid_until=date(2027, 3, 29))
    assert level_intervals(bounded, _local(monday, 0), _local(date(2027, 4, 30), 0)) == [
        (_local(monday, 0), _local(date(2027, 3, 30), 0))
    ]


def test_an_always_open_level_is_one_window_whatever_the_day():
    residents = Level((1, 2), {d: ["00:00-24:00"] for d in WEEKDAYS_6_9 | {"sat": [], "sun": []}}, "Europe/Paris")
    a = level_intervals(residents, utcnow(), utcnow() + timedelta(days=1))
    b = level_intervals(residents, utcnow() + timedelta(days=30), utcnow() + timedelta(days=31))
    assert a == b and len(a) == 1 and a[0][1].year == 2100


# ---------------------------------------------------------------- residents and the default level


def test_alices_badge_opens_the_entrance_on_a_sunday_night_and_not_the_party_room(engine, make_user, client):
    alice, _password = make_user({"role": "resident", "site": "les-tilleuls"}, name="Alice Martin")
    cred = _badge(engine, alice.id, "04a10b2c3d4e80")
    with write_session(engine) as s:
        assert levels.sync_levels(s, utcnow()) > 0
        lobby, party, garage = (_id(s, Door, k) for k in ("lobby-door", "party-room-door", "garage-gate"))
        holder = s.exec(
            select(AccessLevelHolder).where(
                AccessLevelHolder.user_id == alice.id, AccessLevelHolder.level_id == _level(s, "residents").id
            )
        ).one()
        assert holder.origin == "role" and holder.active
        assert levels.sync_levels(s, utcnow()) == 0  # nothing changed: nothing rewritten
    today = utcnow().astimezone(PARIS).date()
    sunday = today + timedelta(days=(6 - today.weekday()) % 7 or 7)
    three_am = _local(sunday, 3)
    index = DecisionIndex()
    with read_session(engine) as s:
        index.load(s)
        state = state_for_doors(s, [lobby, party, garage], utcnow())
    got = index.decide(lobby, "badge", "04a10b2c3d4e80", three_am)
    assert got.allowed and got.source == f"level:{holder.id}"
    assert index.decide(garage, "badge", "04a10b2c3d4e80", three_am).allowed
    assert index.decide(party, "badge", "04a10b2c3d4e80", three_am).reason == "no_window"
    assert may_enter(state, lobby, cred, three_am) and not may_enter(state, party, cred, three_am)
    # the door's grants explain themselves by the level's key (admin's view of the board)
    admin, apw = make_user({"role": "admin"})
    grants = client.get("/api/v1/doors/lobby-door/grants", headers=login(client, admin.email, apw)).json()
    mine = [g for g in grants["grants"] if g["user_id"] == alice.id]
    assert [g["sources"] for g in mine] == [["level:residents"]]
    with read_session(engine) as s:  # preloaded on the controller: a grant due now, never a revoke before 2100
        rows = s.exec(select(Transition).where(Transition.source == f"level:{holder.id}")).all()
    assert {(t.door_id, t.action) for t in rows} >= {(lobby, "grant"), (lobby, "revoke")}
    assert all(t.due_at.year == 2100 for t in rows if t.action == "revoke")


def test_the_cleaning_level_opens_at_six_local_on_the_monday_after_spring_dst(engine, make_user):
    cleaner, _ = make_user(name="Cleaning company")
    _badge(engine, cleaner.id, "c1ea0001")
    friday = datetime(2027, 3, 26, 0, 30, tzinfo=UTC)  # the job's "now": the horizon reaches Monday
    with write_session(engine) as s:
        level = _level(s, "cleaning")
        holder = AccessLevelHolder(level_id=ident(level), user_id=cleaner.id)
        s.add(holder)
        s.flush()
        assert levels.write_level(s, level, friday) == 1
        entrance, service = _id(s, Door, "lobby-door"), _id(s, Door, "meeting-room-door")
        hid = ident(holder)
    index = DecisionIndex()
    with read_session(engine) as s:
        index.load(s, now=friday)
        revokes = {
            t.due_at
            for t in s.exec(select(Transition).where(Transition.source == f"level:{hid}"))
            if t.action == "revoke" and t.door_id == entrance
        }
    monday = date(2027, 3, 29)
    for door in (entrance, service):
        assert not index.decide(door, "badge", "c1ea0001", _local(monday, 5, 59)).allowed
        assert index.decide(door, "badge", "c1ea0001", _local(monday, 6)).allowed
        assert index.decide(door, "badge", "c1ea0001", _local(monday, 8, 59)).allowed
        assert not index.decide(door, "badge", "c1ea0001", _local(monday, 9)).allowed
        assert not index.decide(door, "badge", "c1ea0001", _local(date(2027, 3, 28), 7)).allowed  # Sunday
    assert _local(monday, 6) == datetime(2027, 3, 29, 4, 0, tzinfo=UTC)
    assert datetime(2027, 3, 29, 7, 0, tzinfo=UTC) in revokes  # 09:00 CEST
    assert datetime(2027, 3, 26, 8, 0, tzinfo=UTC) in revokes  # 09:00 CET, the Friday before


# ---------------------------------------------------------------- the decision index and the definition


def test_the_index_agrees_with_the_pure_definition_with_levels(engine, make_user):
    rng = random.Random(12)
    people = []
    for i in range(8):
        user, _ = make_user()
        value = f"1e7e{i:04x}"
        people.append((user.id, _badge(engine, user.id, value), value))
    t0 = utcnow().replace(microsecond=0)
    schedules = [
        "always",
        WEEKDAYS_6_9,
        {"sat": ["08:00-12:00", "14:00-18:30"], "sun": ["22:00-24:00"], "mon": ["00:00-02:00"]},
        {d: ["07:00-20:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
    ]
    windows: list[Window] = []
    with write_session(engine) as s:
        site = s.exec(select(Site).where(Site.key == "les-tilleuls")).one()
        doors = sorted(d.id for d in s.exec(select(Door)).all())
        resources = sorted(r.id for r in s.exec(select(Resource)).all())
        for n, weekly in enumerate(schedules):
            key = f"diff-{n}"
            data = levels.LevelCreate(
                key=key,
                name=key,
                doors=[d.key for d in s.exec(select(Door).where(Door.id.in_(rng.sample(doors, 2))))],
                schedule=weekly,
                exceptions=[(t0 + timedelta(days=rng.randrange(0, 4))).astimezone(PARIS).date()] if n == 3 else [],
                mode=rng.choice(["badge", "authorized"]),
            )
            level = levels.create_level(s, _admin(s), site.key, data)
            for uid, _c, _v in rng.sample(people, 3):
                s.add(AccessLevelHolder(level_id=ident(level), user_id=uid))
            s.flush()
            levels.write_level(s, level, t0)
        for n in range(30):
            start = t0 + timedelta(minutes=30 * rng.randrange(0, 140))
            end = start + timedelta(minutes=30 * rng.randrange(1, 8))
            uid = rng.choice(people)[0]
            mode = rng.choice(["badge", "authorized", "badge+authorized"])
            resource = rng.choice([*resources, None])
            extra = rng.sample(doors, rng.randrange(0 if resource else 1, 3))
            set_windows(s, "visit", 5000 + n, resource, [uid], start, end, mode, active=True, door_ids=extra)
            if resource is not None:
                windows.append(Window(uid, resource, start, end, mode, f"visit:{5000 + n}"))
            windows += [Window(uid, None, start, end, mode, f"visit:{5000 + n}", d) for d in extra]
        doors_of: dict[int, list[int]] = {}
        for link in s.exec(select(DoorResource)).all():
            doors_of.setdefault(link.resource_id, []).append(link.door_id)
        held = levels.holdings(s, ident(site))
    assert len(held) == 12
    pure = desired_state(
        windows,
        doors_of,
        [Cred(c, u, "badge", v) for u, c, v in people],
        levels=held,
        horizon=levels.horizon("Europe/Paris", t0),
    )
    index = DecisionIndex()
    with read_session(engine) as s:
        index.load(s, now=t0)
        from_db = state_for_doors(s, doors, t0)
    checked = allowed = 0
    for minute in range(0, 4 * 24 * 60, 43):
        at = t0 + timedelta(minutes=minute)
        for door in doors:
            for _uid, cred, value in people:
                want = may_enter(pure, door, cred, at)
                assert index.decide(door, "badge", value, at).allowed == want, (door, value, at)
                assert may_enter(from_db, door, cred, at) == want, (door, value, at)
                checked += 1
                allowed += want
    assert checked > 5_000 and 0.05 * checked < allowed < 0.9 * checked


def _admin(s):
    from core.auth import Principal

    return Principal(user_id=0, email="admin@example.com", name="admin", locale="en", admin=True)


# ---------------------------------------------------------------- the API


def test_the_api_refuses_bad_levels_and_assignments(engine, client, make_user, admin_headers):
    with write_session(engine) as s:  # a second site, with a door of its own
        other = Site(key="other-site", name="Other", timezone="Europe/Berlin")
        s.add(other)
        s.flush()
        ctl = Controller(key="other-ctl", site_id=ident(other), name="x", driver="esprfid", settings={})
        s.add(ctl)
        s.flush()
        s.add(Door(key="other-door", site_id=ident(other), name="x", controller_id=ident(ctl)))
    url = "/api/v1/sites/les-tilleuls/access-levels"
    body = {"key": "night", "name": "Night", "doors": ["lobby-door"], "schedule": {"mon": ["20:00-23:00"]}}
    cases = [
        ({"schedule": {"mon": ["06:00-09:00", "08:30-10:00"]}}, "overlapping_intervals"),
        ({"schedule": {"tue": ["09:00-06:00"]}}, "inverted_interval"),
        ({"schedule": {"tue": ["25:00-26:00"]}}, "invalid_interval"),
        ({"doors": ["lobby-door", "other-door"]}, "door_of_other_site"),
        ({"doors": ["no-such-door"]}, "door_not_found"),
        ({"valid_until": "9999-12-31"}, "validation_error"),  # beyond what a controller can hold
        ({"valid_from": "2027-02-01", "valid_until": "2027-01-01"}, "validation_error"),
    ]
    for change, code in cases:
        r = client.post(url, json=body | change, headers=admin_headers)
        assert r.status_code == 422 and r.json()["code"] == code, (change, r.text)
    manager, mpw = make_user({"role": "venue_manager", "venue": "common-rooms"})
    reception, rpw = make_user({"role": "reception", "site": "les-tilleuls"})
    resident, _ = make_user({"role": "resident", "site": "les-tilleuls"})
    stranger, _ = make_user()
    as_manager, as_reception = login(client, manager.email, mpw), login(client, reception.email, rpw)
    assert client.post(url, json=body, headers=as_manager).status_code == 403
    r = client.post(url, json=body, headers=admin_headers)
    assert r.status_code == 201, r.text
    night = r.json()
    assert (night["doors"], night["schedule"], night["holders"]) == (["lobby-door"], {"mon": ["20:00-23:00"]}, 0)
    assert client.post(url, json=body, headers=admin_headers).json()["code"] == "level_exists"
    holders = f"/api/v1/access-levels/{night['id']}/holders"
    r = client.put(f"{holders}/{resident.id}", headers=as_manager)
    assert r.status_code == 403 and r.json()["code"] == "assign_not_allowed"
    assert client.put(f"{holders}/{stranger.id}", headers=as_reception).status_code == 404  # not of this site
    r = client.put(f"{holders}/{resident.id}", headers=as_reception)
    assert r.status_code == 200 and r.json()["origin"] == "admin"
    update = {k: v for k, v in body.items() if k != "key"} | {"schedule": "always"}
    r = client.put(f"/api/v1/access-levels/{night['id']}", json=update, headers=admin_headers)
    assert r.status_code == 200 and r.json()["holders"] == 1
    cred = _badge(engine, resident.id, "0ff1ce00")
    with write_session(engine) as s:
        replan_user(s, resident.id, utcnow())  # as the credentials API does for a new badge
        grants = s.exec(select(Transition).where(Transition.credential_id == cred, Transition.action == "grant")).all()
        assert grants
        for t in grants:  # as if the dispatcher had sent them: the card is on the controller
            t.status = "done"
            s.add(t)
    before = utcnow()
    r = client.delete(f"{holders}/{resident.id}", headers=as_reception)
    assert r.status_code == 200 and r.json()["active"] is False
    with read_session(engine) as s:
        hid = s.exec(select(AccessLevelHolder.id).where(AccessLevelHolder.user_id == resident.id)).one()
        left = select(AccessWindow).where(AccessWindow.source_id == hid, AccessWindow.source_type == "level")
        assert s.exec(left).all() == []
        revoke = s.exec(
            select(Transition).where(Transition.source == f"level:{hid}", Transition.action == "revoke")
        ).all()
        assert revoke and all(t.due_at <= utcnow() and t.credential_id == cred for t in revoke)
        assert all(t.due_at >= before - timedelta(seconds=1) for t in revoke)
        actions = s.exec(select(AuditEntry.action).where(AuditEntry.action.startswith("access_level."))).all()
    wanted = {"access_level.create", "access_level.update", "access_level.assign", "access_level.unassign"}
    assert wanted <= set(actions)
    assert client.delete(f"{holders}/{resident.id}", headers=as_reception).status_code == 404
    listed = client.get("/api/v1/sites/les-tilleuls/access-levels", headers=as_reception).json()
    assert {lv["key"] for lv in listed} >= {"residents", "cleaning", "staff", "night"}
    assert client.get("/api/v1/sites/les-tilleuls/access-levels", headers=as_manager).status_code == 403
    assert client.put(f"{holders}/{resident.id}", headers=admin_headers).json()["active"] is True  # given back
    with read_session(engine) as s:
        assert s.exec(select(AccessWindow).where(AccessWindow.user_id == resident.id)).all()
    assert client.delete(f"/api/v1/access-levels/{night['id']}", headers=admin_headers).status_code == 204
    with read_session(engine) as s:  # the level and every window it gave are gone, revokes due now
        assert s.get(AccessLevel, night["id"]) is None
        assert s.exec(select(AccessWindow).where(AccessWindow.user_id == resident.id)).all() == []
        due = s.exec(select(Transition).where(Transition.source == f"level:{hid}", Transition.status == "pending"))
        assert {t.action for t in due} == {"revoke"}


def test_a_role_level_taken_away_is_not_handed_back(engine, client, make_user, admin_headers):
    resident, _ = make_user({"role": "resident", "site": "les-tilleuls"})
    with write_session(engine) as s:
        levels.sync_levels(s, utcnow())
        level_id = _level(s, "residents").id
    r = client.delete(f"/api/v1/access-levels/{level_id}/holders/{resident.id}", headers=admin_headers)
    assert r.status_code == 200
    with write_session(engine) as s:
        levels.sync_levels(s, utcnow())
        held = s.exec(select(AccessLevelHolder).where(AccessLevelHolder.user_id == resident.id)).one()
        assert held.active is False
        assert s.exec(select(AccessWindow).where(AccessWindow.user_id == resident.id)).all() == []


# ---------------------------------------------------------------- a manager adds a door to a booking


def test_a_managers_added_door_follows_the_booking(engine, client, make_user):
    with write_session(engine) as s:
        rooms = s.exec(select(Controller).where(Controller.key == "rooms-ctl")).one()
        site_id = rooms.site_id
        s.add(Door(key="service-door", site_id=site_id, name="Service door", controller_id=ident(rooms), output=3))
        note_doors(s)
    manager, mpw = make_user({"role": "venue_manager", "venue": "common-rooms"})
    courts_manager, cpw = make_user({"role": "venue_manager", "venue": "sports"})
    _badge(engine, manager.id, "5e1f1ce5")
    as_manager = login(client, manager.email, mpw)
    today = utcnow().astimezone(PARIS).date()
    friday = today + timedelta(days=(4 - today.weekday()) % 7 + 7)
    start, end = _local(friday, 18), _local(friday, 21)
    r = client.post(
        "/api/v1/reservations",
        json={"resource": "party-room", "start": start.isoformat(), "end": end.isoformat()},
        headers=as_manager,
    )
    assert r.status_code == 201, r.text
    res = r.json()
    assert res["status"] == "confirmed", res
    url = f"/api/v1/reservations/{res['id']}/doors"
    r = client.put(url, json={"doors": ["court-gate"]}, headers=as_manager)  # the sports venue's gate
    assert r.status_code == 422 and r.json()["code"] == "door_of_other_venue"
    r = client.put(url, json={"doors": ["service-door"]}, headers=login(client, courts_manager.email, cpw))
    assert r.status_code in (403, 404)
    r = client.put(url, json={"doors": ["service-door", "key-cabinet"]}, headers=as_manager)  # the garage's
    assert r.status_code == 422 and r.json()["code"] == "door_of_other_venue"
    r = client.put(url, json={"doors": ["service-door"]}, headers=as_manager)
    assert r.status_code == 200, r.text
    assert r.json()["doors"] == ["service-door"]
    assert client.get(url, headers=as_manager).json()["doors"] == ["service-door"]

    def service_grants():
        with read_session(engine) as s:
            door = _id(s, Door, "service-door")
            state = state_for_doors(s, [door], utcnow())
            planned = s.exec(select(Transition).where(Transition.door_id == door, Transition.status == "pending")).all()
        return [(g.valid_from, g.valid_until, g.sources) for g in state.grants], planned

    grants, planned = service_grants()
    a_start, a_end = datetime.fromisoformat(res["access_start"]), datetime.fromisoformat(res["access_end"])
    assert grants == [(a_start, a_end, frozenset({f"reservation:{res['id']}"}))]
    assert {t.action for t in planned} == {"grant", "revoke"}
    # the booking moves a day later: the service door's window moves with it
    moved = client.post(
        f"/api/v1/reservations/{res['id']}/reschedule",
        json={"start": (start + timedelta(days=1)).isoformat(), "end": (end + timedelta(days=1)).isoformat()},
        headers=as_manager,
    )
    assert moved.status_code == 200, moved.text
    grants, _ = service_grants()
    assert grants == [(a_start + timedelta(days=1), a_end + timedelta(days=1), frozenset({f"reservation:{res['id']}"}))]
    # cancelled: no window left on any of its doors
    r = client.post(f"/api/v1/reservations/{res['id']}/cancel", json={}, headers=as_manager)
    assert r.status_code == 200, r.text
    grants, planned = service_grants()
    assert grants == [] and not [t for t in planned if t.action == "grant"]
    with read_session(engine) as s:
        assert s.exec(select(AccessWindow).where(AccessWindow.source_id == res["id"])).all() == []
        assert len(s.exec(select(ExtraDoor).where(ExtraDoor.source_id == res["id"])).all()) == 1
        assert s.exec(select(AuditEntry).where(AuditEntry.action == "reservation.doors")).first() is not None


def test_role_holders_follow_the_roles(engine, make_user):
    manager, _ = make_user({"role": "venue_manager", "venue": "common-rooms"})
    reception, _ = make_user({"role": "reception", "site": "les-tilleuls"})
    with write_session(engine) as s:
        staff = _level(s, "staff")
        staff.roles = ["reception", "venue_manager"]
        s.add(staff)
        s.flush()
        levels.sync_levels(s, utcnow())
        held = {h.user_id for h in s.exec(select(AccessLevelHolder).where(AccessLevelHolder.level_id == staff.id))}
        assert {manager.id, reception.id} <= held
        staff.roles = ["reception"]
        s.add(staff)
        s.flush()
        levels.sync_levels(s, utcnow())  # the manager no longer qualifies: holding and windows go
        held = {h.user_id for h in s.exec(select(AccessLevelHolder).where(AccessLevelHolder.level_id == staff.id))}
        assert manager.id not in held and reception.id in held
        assert s.exec(select(AccessWindow).where(AccessWindow.user_id == manager.id)).all() == []
        assert s.exec(select(AccessWindow).where(AccessWindow.user_id == reception.id)).all()


def test_the_site_file_refuses_bad_levels():
    import yaml

    from config.site import SiteFileError, example_path, parse_site_document

    doc = yaml.safe_load(example_path().read_text())
    levels_ = doc["sites"][0]["access_levels"]
    levels_[1]["schedule"]["mon"] = ["06:00-09:00", "08:00-10:00"]
    levels_[2]["doors"].append("no-such-door")
    levels_[0]["schedule"] = {"sun": ["22:00-21:00"]}
    with pytest.raises(SiteFileError) as exc:
        parse_site_document(doc)
    errors = "\n".join(exc.value.errors)
    assert "sites.0.access_levels.1.schedule" in errors and "two ranges overlap" in errors
    assert "ends before it starts" in errors
    doc = yaml.safe_load(example_path().read_text())
    doc["sites"][0]["access_levels"][2]["doors"].append("no-such-door")
    with pytest.raises(SiteFileError) as exc:
        parse_site_document(doc)
    assert exc.value.errors == ["sites.0.access_levels.2.doors.5: no door 'no-such-door' in this site"]


def test_a_door_added_to_a_series_opens_for_every_coming_occurrence(engine, client, make_user):
    with write_session(engine) as s:
        rooms = s.exec(select(Controller).where(Controller.key == "rooms-ctl")).one()
        s.add(
            Door(key="service-door", site_id=rooms.site_id, name="Service door", controller_id=ident(rooms), output=3)
        )
        note_doors(s)
    manager, mpw = make_user({"role": "venue_manager", "venue": "common-rooms"})
    _badge(engine, manager.id, "5e1f1ce6")
    as_manager = login(client, manager.email, mpw)
    today = utcnow().astimezone(PARIS).date()
    friday = today + timedelta(days=(4 - today.weekday()) % 7 + 7)
    start = _local(friday, 18)
    r = client.post(
        "/api/v1/series",
        json={
            "resource": "party-room",
            "start": start.isoformat(),
            "end": (start + timedelta(hours=3)).isoformat(),
            "rrule": "FREQ=WEEKLY;COUNT=3",
        },
        headers=as_manager,
    )
    assert r.status_code == 201, r.text
    with read_session(engine) as s:
        from bms.models import Reservation

        ids = [x.id for x in s.exec(select(Reservation).order_by(Reservation.start)).all()]
    assert len(ids) == 3
    r = client.put(
        f"/api/v1/reservations/{ids[0]}/doors", json={"doors": ["service-door"], "series": True}, headers=as_manager
    )
    assert r.status_code == 200, r.text
    assert sorted(r.json()["reservations"]) == ids
    with read_session(engine) as s:
        door = _id(s, Door, "service-door")
        on_door = s.exec(select(AccessWindow).where(AccessWindow.door_id == door)).all()
    assert sorted(w.source_id for w in on_door) == ids
    assert [w.start.astimezone(PARIS).hour for w in sorted(on_door, key=lambda w: w.start)] == [
        17,
        17,
        17,
    ]  # 30 min set-up
