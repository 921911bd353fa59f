"""An OSDP reader on a pty, through the real driver, with the secure channel up."""

from __future__ import annotations

import secrets
from datetime import timedelta

from access.protocol import HoldOpen, Unlock
from drivers.osdp.simulator import SimulatedPd
from tests.drivers.helpers import wait_until
from tests.drivers.osdp.conftest import now

CARD = "04a10b2c3d4e80"


def _reader(rig_factory, **settings):
    key = secrets.token_bytes(16)
    rig = rig_factory([SimulatedPd(1, scbk=key)], {1: {"contacts": {1: 1}, "pulse_seconds": 2, **settings}})
    assert rig.online("pd-1")
    assert rig.line.pd(1).secure and rig.driver.state("pd-1") == ("online", "secure channel up")
    return rig, rig.line.pd(1)


def test_a_granted_card_pulses_the_output_green_and_short(rig_factory):
    rig, pd = _reader(rig_factory)
    rig.doors.allow("pd-1", 1, "badge", CARD, now() - timedelta(minutes=5), now() + timedelta(hours=1))
    pd.present_card(bytes.fromhex(CARD))
    assert wait_until(lambda: pd.outputs_sent(1), 3)
    assert pd.outputs_sent(1)[0]["control_code"] == 5 and pd.outputs_sent(1)[0]["timer_count"] == 20
    assert pd.is_on(1)
    assert wait_until(lambda: pd.leds() and pd.buzzes(), 3)
    assert pd.leds()[0]["on_color"] == 2 and pd.buzzes()[0]["on_count"] == 1  # green, short
    assert wait_until(lambda: rig.events("granted"), 3)
    event = rig.events("granted")[0]
    assert event.credential_uid == CARD and event.door_output == 1 and event.raw["decided_by"] == "gateway"


def test_a_refused_card_opens_nothing_red_and_long(rig_factory):
    rig, pd = _reader(rig_factory)
    pd.present_card(bytes.fromhex("04deadbeef0102"))
    assert wait_until(lambda: rig.events("denied"), 3)
    assert wait_until(lambda: pd.buzzes(), 3)
    assert pd.outputs_sent() == [] and not pd.is_on(1)
    assert pd.leds()[0]["on_color"] == 1 and pd.buzzes()[0]["on_count"] == 10  # red, long
    assert rig.events("denied")[0].raw["reason"] == "unknown_credential"


def test_outside_its_window_a_card_is_refused(rig_factory):
    rig, pd = _reader(rig_factory)
    rig.doors.allow("pd-1", 1, "badge", CARD, now() + timedelta(hours=1), now() + timedelta(hours=2))
    pd.present_card(bytes.fromhex(CARD))
    assert wait_until(lambda: rig.events("denied"), 3)
    assert rig.events("denied")[0].raw["reason"] == "no_window" and pd.outputs_sent() == []


def test_a_pin_on_the_keypad_is_decided_and_never_shown(rig_factory):
    rig, pd = _reader(rig_factory)
    rig.doors.allow("pd-1", 1, "pin", "4711", now() - timedelta(minutes=1), now() + timedelta(hours=1))
    pd.type_pin("4711")
    assert wait_until(lambda: pd.outputs_sent(1), 3)
    event = rig.events("granted")[0]
    assert event.raw["credential_kind"] == "pin"
    assert "4711" not in repr(rig.doors.asked[-1])  # a presentation's repr hides the PIN
    pd.type_pin("1234")
    assert wait_until(lambda: rig.events("denied"), 3)
    assert len(pd.outputs_sent(1)) == 1


def test_a_qr_code_arrives_as_card_data_and_is_decided_the_same_way(rig_factory):
    rig, pd = _reader(rig_factory)
    secret = "BGV1-" + secrets.token_urlsafe(20)
    rig.doors.allow("pd-1", 1, "qr", secret, now() - timedelta(minutes=1), now() + timedelta(hours=1))
    pd.present_qr(secret)
    assert wait_until(lambda: pd.outputs_sent(1), 3)
    assert rig.events("granted")[0].raw["credential_kind"] == "qr"


def test_a_wiegand_reader_behind_the_pd_is_read_as_its_number(rig_factory):
    rig, pd = _reader(rig_factory, card_data="wiegand")
    rig.doors.allow("pd-1", 1, "badge", "1234567", now() - timedelta(minutes=1), now() + timedelta(hours=1))
    pd.present_wiegand(1234567, bits=26)
    assert wait_until(lambda: pd.outputs_sent(1), 3)
    assert rig.events("granted")[0].spellings == ("decimal",)


def test_no_decision_data_means_refused_with_the_reason(rig_factory):
    key = secrets.token_bytes(16)
    rig = rig_factory([SimulatedPd(1, scbk=key)], {1: {}}, decide=lambda p: (_ for _ in ()).throw(RuntimeError("x")))
    assert rig.online("pd-1")
    rig.line.pd(1).present_card(bytes.fromhex(CARD))
    assert wait_until(lambda: rig.events("denied"), 3)
    assert rig.events("denied")[0].raw["reason"] == "decision_failed" and rig.line.pd(1).outputs_sent() == []


def test_unlock_pulses_and_free_mode_holds_then_releases(rig_factory):
    rig, pd = _reader(rig_factory)
    assert rig.run(rig.driver.send("pd-1", Unlock("u1", 1, seconds=3))).ok
    assert pd.outputs_sent(1)[-1]["timer_count"] == 30 and pd.is_on(1)
    result = rig.run(rig.driver.send("pd-1", HoldOpen("h1", 2, until=now() + timedelta(seconds=2))))
    assert result.ok and pd.is_on(2)
    # the door contact of a held door opening is no forced entry
    assert wait_until(lambda: not pd.is_on(2), 5)  # the line locks it again at the window's end by itself
    assert pd.outputs_sent(2)[-1]["control_code"] == 1
    assert rig.run(rig.driver.send("pd-1", HoldOpen("h2", 2, until=now() + timedelta(hours=1)))).ok
    assert pd.is_on(2)
    assert rig.run(rig.driver.send("pd-1", HoldOpen("h3", 2, until=None))).ok  # released by the dispatcher
    assert not pd.is_on(2)


def test_door_contact_forced_and_held_open(rig_factory):
    rig, pd = _reader(rig_factory, held_open_seconds=1)
    pd.set_input(2, False)  # the baseline report
    assert wait_until(lambda: pd.inputs, 1)
    import time

    time.sleep(0.3)
    pd.set_input(1, True)  # the door opens with no grant: forced
    assert wait_until(lambda: rig.events("forced"), 3)
    assert rig.events("forced")[0].door_output == 1
    assert wait_until(lambda: rig.events("held_open"), 4)
    pd.set_input(1, False)
    rig.doors.allow("pd-1", 1, "badge", CARD, now() - timedelta(minutes=1), now() + timedelta(hours=1))
    pd.present_card(bytes.fromhex(CARD))
    assert wait_until(lambda: pd.outputs_sent(1), 3)
    pd.set_input(1, True)  # opened under a grant: not forced
    assert wait_until(lambda: len(rig.events("granted")) == 1, 2)
    pd.set_input(1, False)
    pd.set_tamper(True)
    assert wait_until(lambda: rig.events("tamper"), 3)
    assert len(rig.events("forced")) == 1
