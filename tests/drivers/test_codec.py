"""The esp-rfid wire format, both directions, without a broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from drivers.esprfid import codec
from drivers.esprfid.connection import MqttSettings


def test_adduser_carries_unix_seconds_and_relay_acctypes():
    record = codec.UserRecord("04a1", "Ann", {1: 1, 3: 1}, 1_900_000_000, 1_900_003_600, "4321")
    msg = codec.adduser("10.0.0.5", record)
    assert msg == {
        "cmd": "adduser",
        "doorip": "10.0.0.5",
        "uid": "04a1",
        "user": "Ann",
        "acctype": 1,
        "acctype3": 1,
        "validsince": 1_900_000_000,
        "validuntil": 1_900_003_600,
        "pincode": "4321",
    }
    assert codec.UserRecord.from_fields(json.loads(codec.dumps(msg))) == record
    assert codec.epoch(datetime(2030, 3, 17, 17, 46, 40, tzinfo=UTC)) == 1_900_000_000
    with pytest.raises(ValueError):
        codec.acctype_key(5)


def test_parse_device_messages():
    assert codec.parse_send(b'{"type":"adduser","ip":"1.2.3.4","hostname":"h"}') == codec.Ack("adduser", "1.2.3.4", "h")
    beat = codec.parse_send(b'{"type":"heartbeat","time":5,"uptime":"99","ip":"1.2.3.4","hostname":"h"}')
    assert beat == codec.Presence(False, 5, 99, "1.2.3.4", "h")
    multi = codec.parse_send(
        codec.dumps(codec.access_message(7, True, ["Always", "Disabled"], "Ann", "04a1", "h", ["a", "b"]))
    )
    assert isinstance(multi, codec.Access) and multi.states == ("Always", "Disabled") and multi.known
    listed = codec.parse_send(
        codec.dumps(
            {
                "command": "userfile",
                "uid": "9",
                "user": "Bo",
                "acctype": 1,
                "acctype2": None,
                "validsince": 0,
                "validuntil": 10,
            }
        )
    )
    assert isinstance(listed, codec.UserFile) and listed.record.acctypes == {1: 1} and listed.record.validuntil == 10
    tamper = codec.parse_send(codec.dumps(codec.log_message("WARN", "tamper", "Door was tampered!", 1, "h")))
    assert isinstance(tamper, codec.LogEvent) and codec.log_event_kind(tamper) == "forced"
    assert codec.parse_send(b'{"type":"getconf","configfile":{}}') is None  # not ours to use
    assert [codec.access_kind(s) for s in ("Always", "Admin", "Expired", "Denied", "Banana")] == [
        "granted",
        "granted",
        "denied",
        "denied",
        "unknown",
    ]


@pytest.mark.parametrize(
    "payload",
    [b"", b"nope", b"\xff", b"[]", b'"str"', b'{"type":"access","uid":"1"}', b"{" + b" " * 9000 + b"}"],
)
def test_malformed_device_messages_raise_one_error_type(payload: bytes):
    with pytest.raises(codec.MalformedMessage):
        codec.parse_send(payload)


def test_availability_payloads():
    assert codec.parse_avty(b"online") is True and codec.parse_avty(b"offline") is False
    with pytest.raises(codec.MalformedMessage):
        codec.parse_avty(b"sleepy")


def test_mqtt_urls():
    s = MqttSettings.from_url("mqtts://gate%40site:p%3Ass@broker.example:8884", ca_file="/ca.pem")
    assert (s.host, s.port, s.username, s.password, s.tls, s.ca_file) == (
        "broker.example",
        8884,
        "gate@site",
        "p:ss",
        True,
        "/ca.pem",
    )
    assert s.safe_url == "mqtts://gate@site@broker.example:8884"
    assert MqttSettings.from_url("mqtt://localhost").port == 1883
    assert MqttSettings.from_url("mqtts://localhost").port == 8883
    for bad in ("http://x", "mqtt://", "broker:1883"):
        with pytest.raises(ValueError):
            MqttSettings.from_url(bad)
