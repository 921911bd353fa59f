"""A key cabinet on OSDP: slot outputs are the slots' locks, slot inputs say whether the key is in."""

from __future__ import annotations

import secrets
import time
from datetime import timedelta

from drivers.osdp.simulator import SimulatedPd
from tests.drivers.helpers import wait_until
from tests.drivers.osdp.conftest import now

CARD = "04a10b2c3d4e80"
CAR, PARTY = 1, 2  # slots: the shared car's key, the party room's key


def _cabinet(rig_factory):
    pd = SimulatedPd(1, outputs=4, inputs=4, scbk=secrets.token_bytes(16))
    rig = rig_factory([pd], {1: {"key_slots": {CAR: 1, PARTY: 2}, "pulse_seconds": 3}})
    assert rig.online("pd-1")
    pd.set_input(1, True)  # both keys hang in the cabinet
    pd.set_input(2, True)
    assert wait_until(lambda: rig.driver.lines[0].pds[0].inputs == b"\x01\x01\x00\x00", 3)
    with rig.lock:
        rig.reports.clear()  # the first reports set the baseline
    return rig, pd


def test_a_slot_is_released_only_within_the_holders_window(rig_factory):
    rig, pd = _cabinet(rig_factory)
    rig.doors.allow("pd-1", CAR, "badge", CARD, now() - timedelta(minutes=1), now() + timedelta(hours=1))
    rig.doors.allow("pd-1", PARTY, "badge", CARD, now() + timedelta(days=1), now() + timedelta(days=2))
    pd.present_card(bytes.fromhex(CARD))
    assert wait_until(lambda: pd.outputs_sent(CAR), 3)
    assert pd.is_on(CAR) and pd.outputs_sent(PARTY) == []  # the party room's key stays locked: not its day
    granted = rig.events("granted")
    assert [e.door_output for e in granted] == [CAR]

    pd.set_input(CAR, False)  # the key leaves its slot
    assert wait_until(lambda: rig.events("key_taken"), 3)
    taken = rig.events("key_taken")[0]
    assert taken.door_output == CAR and taken.credential_uid == CARD and not rig.events("forced")
    pd.set_input(CAR, True)
    assert wait_until(lambda: [e for e in rig.events("key_returned") if e.door_output == CAR], 3)
    assert next(e for e in rig.events("key_returned") if e.door_output == CAR).credential_uid == CARD


def test_a_pin_releases_the_slot_and_a_stranger_gets_nothing(rig_factory):
    rig, pd = _cabinet(rig_factory)
    rig.doors.allow("pd-1", PARTY, "pin", "2468", now() - timedelta(minutes=1), now() + timedelta(hours=1))
    pd.present_card(bytes.fromhex("04ffffffffff01"))
    assert wait_until(lambda: rig.events("denied"), 3)
    pd.type_pin("2468")
    assert wait_until(lambda: pd.outputs_sent(PARTY), 3)
    assert pd.outputs_sent(CAR) == []


def test_a_key_not_back_when_the_window_ends_raises_one_alert(rig_factory):
    rig, pd = _cabinet(rig_factory)
    rig.doors.allow("pd-1", CAR, "badge", CARD, now() - timedelta(minutes=1), now() + timedelta(seconds=2))
    pd.present_card(bytes.fromhex(CARD))
    assert wait_until(lambda: pd.outputs_sent(CAR), 3)
    pd.set_input(CAR, False)
    assert wait_until(lambda: rig.events("key_taken"), 3)
    assert wait_until(lambda: rig.events("key_overdue"), 6)
    overdue = rig.events("key_overdue")
    assert overdue[0].door_output == CAR and overdue[0].credential_uid == CARD
    assert overdue[0].raw["reason"] == "no_window"
    time.sleep(1.2)  # the next checks do not repeat the alert
    assert len(rig.events("key_overdue")) == 1
    pd.set_input(CAR, True)
    assert wait_until(lambda: rig.events("key_returned"), 3)


def test_a_key_taken_without_a_release_is_forced(rig_factory):
    rig, pd = _cabinet(rig_factory)
    pd.set_input(PARTY, False)
    assert wait_until(lambda: rig.events("forced"), 3)
    assert rig.events("forced")[0].door_output == PARTY and rig.events("key_taken")[0].credential_uid is None
