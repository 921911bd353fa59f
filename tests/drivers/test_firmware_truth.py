"""What the real esp-rfid firmware does, and the driver living with it: card UIDs spelled by each
reader chip, ``getuserlist`` answered in the shapes the cards were stored in, boot published before
the command topic is subscribed."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from access.protocol import Booted, DoorEvent, FullSync, Grant, Revoke, presented_key
from drivers.esprfid import codec
from drivers.esprfid.driver import RetryPolicy
from drivers.esprfid.simulator import DeviceConfig, firmware_uid
from tests.drivers.helpers import DeviceClock, make_rig, wait_until

T0 = datetime(2030, 6, 1, 8, 0, tzinfo=UTC)


def test_the_simulated_firmware_spells_uids_as_each_reader_chip_does():
    # MFRC522/PN532: String(byte, HEX) per byte, lower case, no leading zero
    assert firmware_uid("mfrc522", bytes([0x0A, 0x1B])) == "a1b"
    assert firmware_uid("pn532", bytes.fromhex("04000a10")) == "40a10"  # 04 00 0a 10
    # RDM6300: the 5-byte EM4100 tag as %02x each
    assert firmware_uid("rdm6300", bytes.fromhex("000a1b2c3d")) == "000a1b2c3d"
    # Wiegand: the decoded code in decimal
    assert firmware_uid("wiegand", 1234567) == "1234567"
    # dual readers: whichever chip can read the card
    assert firmware_uid("rdm6300+mfrc522", bytes.fromhex("0a1b2c3d4e")) == "0a1b2c3d4e"
    assert firmware_uid("rdm6300+mfrc522", bytes.fromhex("04a10b2c")) == "4a1b2c"
    with pytest.raises(ValueError):
        firmware_uid("wiegand", bytes.fromhex("04a10b2c"))
    with pytest.raises(ValueError):
        firmware_uid("mfrc522", 1234)


def test_the_driver_spells_a_card_the_way_the_reader_will_present_it():
    assert codec.spell_for_reader("mfrc522", "uid", "040a1b0c") == "4a1bc"
    assert codec.spell_for_reader("pn532", "uid", "040a1b0c") == "4a1bc"
    assert codec.spell_for_reader("rdm6300", "em4100", "000a1b2c3d") == "000a1b2c3d"
    assert codec.spell_for_reader("wiegand", "wiegand", "1234567") == "1234567"
    assert codec.spell_for_reader("wiegand", "uid", "040a1b0c") is None  # no chip of it reads the card
    assert codec.reader_spellings("rdm6300+mfrc522") == ("hex", "hex_compact")
    assert presented_key("hex_compact", "4A1BC") == "4a1bc" and presented_key("decimal", "007") == "7"


# card as the gateway stores it, how a person holds it to the reader, a card that is not theirs
READERS = [
    ("mfrc522", "uid", "040a1b0c", bytes.fromhex("040a1b0c"), bytes.fromhex("04a1b0c0")),
    ("pn532", "uid", "04a10b2c3d4e08", bytes.fromhex("04a10b2c3d4e08"), bytes.fromhex("04a1b2c3d4e008")),
    ("rdm6300", "em4100", "000a1b2c3d", bytes.fromhex("000a1b2c3d"), bytes.fromhex("0a1b2c3d00")),
    ("wiegand", "wiegand", "1234567", 1234567, 12345670),
    ("rdm6300+mfrc522", "uid", "01020304", bytes.fromhex("01020304"), bytes.fromhex("10203040")),
]


@pytest.mark.parametrize(("reader", "fmt", "value", "card", "stranger"), READERS, ids=[r[0] for r in READERS])
def test_a_granted_card_opens_on_every_reader_type_only_in_its_window(
    mqtt_url, topic_prefix, reader, fmt, value, card, stranger
):
    clock = DeviceClock(T0.timestamp() + 60)
    cfg = DeviceConfig(f"{topic_prefix}/door", "198.18.0.1", "esp-door", heartbeat_interval=5, reader=reader)
    rig = make_rig(mqtt_url, [cfg], clock=clock)
    try:
        device = rig.device(cfg.topic)
        grant = Grant("g1", 1, value, "Alice", T0, T0 + timedelta(hours=1), credential_format=fmt)
        assert rig.run(rig.driver.send("esp-door", grant)).ok
        assert device.present_card(card) == "Always"
        assert device.present_card(stranger) == "Denied"
        clock.now = T0.timestamp() - 1
        assert device.present_card(card) == "Expired"
        clock.now = (T0 + timedelta(hours=1)).timestamp()
        assert device.present_card(card) == "Expired"
        # the events carry the reader's spelling and say how to read it back
        assert wait_until(lambda: len(rig.collected(DoorEvent)) >= 4)
        first = rig.collected(DoorEvent)[0]
        spelled = {presented_key(s, first.credential_uid or "") for s in first.spellings}
        assert first.kind == "granted" and codec.spell_for_reader(reader, fmt, value) in spelled
        assert rig.run(rig.driver.send("esp-door", Revoke("r1", 1, value, fmt))).ok
        clock.now = T0.timestamp() + 60
        assert device.present_card(card) == "Denied"
    finally:
        rig.close()


def test_a_card_the_reader_cannot_read_is_not_stored(mqtt_url, topic_prefix):
    cfg = DeviceConfig(f"{topic_prefix}/door", "198.18.0.1", "esp-door", heartbeat_interval=5, reader="wiegand")
    rig = make_rig(mqtt_url, [cfg])
    try:
        result = rig.run(rig.driver.send("esp-door", Grant("g", 1, "04a1b2c3", "A", T0, T0 + timedelta(hours=1))))
        assert result.ok and "cannot be read" in result.detail
        assert rig.device(cfg.topic).users == {}
    finally:
        rig.close()


def test_getuserlist_answers_in_both_stored_shapes_and_sync_repairs_by_difference(mqtt_url, topic_prefix):
    cfg = DeviceConfig(f"{topic_prefix}/door", "198.18.0.1", "esp-door", heartbeat_interval=5)
    rig = make_rig(mqtt_url, [cfg])
    try:
        device = rig.device(cfg.topic)
        wanted = [
            Grant(f"g{i}", 1, uid, f"user {i}", T0, T0 + timedelta(hours=1))
            for i, uid in enumerate(["a1a1a1a1", "b2b2b2b2"])
        ]
        for g in wanted:
            assert rig.run(rig.driver.send("esp-door", g)).ok
        device.add_user_from_web("c3c3c3c3", "typed on the device", 0, 2**31 - 1)
        assert device.files["a1a1a1a1"]["cmd"] == "adduser"  # stored as the command was received
        users = rig.run(rig.driver.read_users("esp-door"))
        assert users.uids == {"a1a1a1a1", "b2b2b2b2", "c3c3c3c3"}  # both shapes understood

        handled = device.commands_handled
        result = rig.run(rig.driver.send("esp-door", FullSync("s1", wanted)))
        assert result.ok and result.changes == {"removed": ["c3c3c3c3"]}, result
        assert device.commands_handled - handled == 3  # getuserlist, the list's closing fence, one deletuid
        assert sorted(device.users) == ["a1a1a1a1", "b2b2b2b2"]

        handled = device.commands_handled
        again = rig.run(rig.driver.send("esp-door", FullSync("s2", wanted)))
        assert again.ok and again.changes == {} and again.attempts == 1, again
        assert device.commands_handled - handled == 2  # it only listened: nothing written
    finally:
        rig.close()


def test_a_rebooted_device_is_reached_within_a_second_though_it_boots_before_it_listens(mqtt_url, topic_prefix):
    """The firmware publishes boot, then subscribes: a command sent on the boot message is lost. With the
    production retry policy (5 s acknowledgement timeout) the re-sync must still land in about a second."""
    cfg = DeviceConfig(f"{topic_prefix}/door", "198.18.0.1", "esp-door", heartbeat_interval=5, boot_to_subscribe=0.3)
    rig = make_rig(mqtt_url, [cfg], retry=RetryPolicy())
    try:
        device = rig.device(cfg.topic)
        boots = len(rig.collected(Booted))
        device.go_offline()
        started = time.monotonic()
        device.come_back()
        assert wait_until(lambda: len(rig.collected(Booted)) > boots, 5)
        grant = Grant("g", 1, "a1a1a1a1", "A", T0, T0 + timedelta(hours=1))
        handled = device.commands_handled
        result = rig.run(rig.driver.send("esp-door", FullSync("after-boot", [grant])))
        took = time.monotonic() - started
        assert result.ok and "a1a1a1a1" in device.users, result
        assert result.attempts > 1 + 1, result  # the first list request was lost, then resent quickly
        assert device.commands_handled - handled == 3  # getuserlist, fence, adduser: nothing twice
        assert took < 2.0, f"re-sync after a boot took {took:.2f}s"
    finally:
        rig.close()
