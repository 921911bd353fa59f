"""One RS-485 line, several PDs, and what goes wrong on a line: silence, noise, a wrong key, two PDs
on one address, the port vanishing. Each is seen once, the PD is marked as it is, no door opens."""

from __future__ import annotations

import logging
import os
import secrets
import time
from datetime import timedelta

import pytest

from access.protocol import ControllerUnavailable, Unlock
from drivers.osdp.driver import OsdpDriver, PdConfig, read_key
from drivers.osdp.settings import OsdpSettings
from drivers.osdp.simulator import SimulatedLine, SimulatedPd
from tests.drivers.helpers import wait_until
from tests.drivers.osdp.conftest import now

CARD = "04a10b2c3d4e80"


def test_two_pds_on_one_line_each_with_its_own_key(rig_factory):
    rig = rig_factory(
        [SimulatedPd(1, scbk=secrets.token_bytes(16)), SimulatedPd(2, scbk=secrets.token_bytes(16))], {1: {}, 2: {}}
    )
    assert rig.online("pd-1") and rig.online("pd-2")
    assert len(rig.driver.lines) == 1 and rig.line.pd(1).secure and rig.line.pd(2).secure
    rig.doors.allow("pd-2", 1, "badge", CARD, now() - timedelta(minutes=1), now() + timedelta(hours=1))
    rig.line.pd(1).present_card(bytes.fromhex(CARD))
    rig.line.pd(2).present_card(bytes.fromhex(CARD))
    assert wait_until(lambda: rig.line.pd(2).outputs_sent(1), 3)
    assert wait_until(lambda: rig.events("denied", "pd-1"), 3)
    assert rig.line.pd(1).outputs_sent() == []


def test_a_silent_pd_goes_offline_once_and_comes_back_once(rig_factory, caplog):
    rig = rig_factory(
        [SimulatedPd(1, scbk=secrets.token_bytes(16)), SimulatedPd(2, scbk=secrets.token_bytes(16))], {1: {}, 2: {}}
    )
    assert rig.online("pd-1") and rig.online("pd-2")
    with rig.lock:
        rig.reports.clear()
    with caplog.at_level(logging.INFO, logger="drivers.osdp"):
        rig.line.pd(1).silence()
        assert wait_until(lambda: rig.driver.state("pd-1")[0] == "offline", 10)
        assert rig.driver.stale_controllers(now()) == ["pd-1"]
        assert rig.driver.state("pd-2")[0] == "online"  # its neighbour on the line is not concerned
        rig.line.pd(1).silence(False)
        assert rig.online("pd-1", 15)
    seen = [a.online for a in rig.availability("pd-1")]
    assert seen == [False, True]
    lines = [r.getMessage() for r in caplog.records if "pd-1" in r.getMessage()]
    assert sum("offline" in m for m in lines) == 1 and sum(": online" in m for m in lines) == 1


def test_a_pd_with_the_wrong_key_is_degraded_and_opens_nothing(rig_factory, caplog):
    with caplog.at_level(logging.WARNING, logger="drivers.osdp"):
        rig = rig_factory([SimulatedPd(1, scbk=secrets.token_bytes(16))], {1: {"_key": secrets.token_bytes(16)}})
        assert wait_until(lambda: rig.driver.state("pd-1")[0] == "degraded", 10), rig.driver.state("pd-1")
    assert [a.degraded for a in rig.availability("pd-1")] == [True]
    assert not rig.line.pd(1).secure
    rig.doors.allow("pd-1", 1, "badge", CARD, now() - timedelta(minutes=1), now() + timedelta(hours=1))
    rig.line.pd(1).present_card(bytes.fromhex(CARD))
    result = rig.run(rig.driver.send("pd-1", Unlock("u1", 1)))
    assert not result.ok and "degraded" in result.detail
    assert rig.line.pd(1).outputs_sent() == [] and rig.events() == []
    assert sum("degraded" in r.getMessage() for r in caplog.records) == 1
    assert rig.keys[1].hex() not in caplog.text  # the key is never logged


def test_two_pds_answering_on_one_address(rig_factory):
    key = secrets.token_bytes(16)
    rig = rig_factory([SimulatedPd(1, scbk=key), SimulatedPd(1, scbk=key)], {1: {"_key": key}})
    # their answers collide on the wire: never a stable secure session, never a door opened
    assert wait_until(lambda: rig.driver.state("pd-1")[0] in ("degraded", "offline"), 10)
    rig.doors.allow("pd-1", 1, "badge", CARD, now() - timedelta(minutes=1), now() + timedelta(hours=1))
    for pd in rig.line.pds:
        assert all(c.get("control_code") != 5 for c in pd.outputs_sent())


def test_line_noise_and_corrupted_frames_are_survived(rig_factory):
    rig = rig_factory([SimulatedPd(1, scbk=secrets.token_bytes(16))], {1: {}})
    assert rig.online("pd-1")
    for _ in range(20):  # garbage, a truncated frame start, a frame with a bad checksum
        rig.line.noise(os.urandom(37))
        rig.line.noise(bytes([0x53, 0x81, 0x0C]))
        rig.line.noise(bytes([0x53, 0x81, 0x08, 0x00, 0x04, 0x40, 0xAA, 0xBB]))
        time.sleep(0.01)
    assert rig.line.pd(1).outputs_sent() == []  # noise opens nothing
    rig.doors.allow("pd-1", 1, "badge", CARD, now() - timedelta(minutes=1), now() + timedelta(hours=1))
    for _ in range(4):  # a card shown while the line recovers may be lost: the resident shows it again
        assert rig.online("pd-1", 15)
        rig.line.pd(1).present_card(bytes.fromhex(CARD))
        if wait_until(lambda: rig.line.pd(1).outputs_sent(1), 3):
            break
    assert rig.line.pd(1).outputs_sent(1)
    assert all(line._thread and line._thread.is_alive() for line in rig.driver.lines)


def test_the_port_closed_under_the_driver(rig_factory, caplog):
    rig = rig_factory([SimulatedPd(1, scbk=secrets.token_bytes(16))], {1: {}})
    assert rig.online("pd-1")
    with caplog.at_level(logging.WARNING, logger="drivers.osdp"):
        rig.line.close()
        assert wait_until(lambda: rig.driver.state("pd-1")[0] == "offline", 10)
        time.sleep(1.5)  # the line retries opening the port meanwhile
    with pytest.raises(ControllerUnavailable):  # nothing can be attempted: the dispatcher retries later
        rig.run(rig.driver.send("pd-1", Unlock("u1", 1)))
    assert sum("offline" in r.getMessage() for r in caplog.records if "pd-1" in r.getMessage()) == 1
    assert all(line._thread and line._thread.is_alive() for line in rig.driver.lines)


def test_install_mode_keys_a_new_pd_and_keeps_the_key_in_a_private_file(tmp_path):
    line = SimulatedLine([SimulatedPd(1)]).start()  # a factory-fresh PD: no key yet
    path = tmp_path / "keys" / "pd1.key"
    s = OsdpSettings(port=line.port, address=1, scbk_file=str(path), install_mode=True)
    driver = OsdpDriver([PdConfig("pd-1", s)], None)
    driver.start()
    try:
        assert wait_until(lambda: driver.state("pd-1")[0] == "online", 10)
        assert os.stat(path).st_mode & 0o077 == 0
        assert line.pd(1).keyed == read_key(str(path)).reveal() and line.pd(1).secure
        assert "Secret(***)" == repr(read_key(str(path)))
    finally:
        driver.stop()
        line.close()
    # once keyed, install mode off: the PD now speaks only with its own key
    line2 = SimulatedLine([SimulatedPd(1, scbk=read_key(str(path)).reveal())]).start()
    driver = OsdpDriver([PdConfig("pd-1", s.model_copy(update={"port": line2.port, "install_mode": False}))], None)
    driver.start()
    try:
        assert wait_until(lambda: driver.state("pd-1")[0] == "online", 10)
    finally:
        driver.stop()
        line2.close()


def test_a_key_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "loose.key"
    path.write_text(secrets.token_bytes(16).hex())
    os.chmod(path, 0o644)
    try:
        read_key(str(path))
    except PermissionError as exc:
        assert "chmod 600" in str(exc)
    else:
        raise AssertionError("a world-readable key file was accepted")


def test_a_pd_whose_key_file_is_unusable_is_left_out_alone(tmp_path, caplog):
    good = tmp_path / "good.key"
    fd = os.open(good, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, secrets.token_bytes(16).hex().encode())
    os.close(fd)
    loose = tmp_path / "loose.key"
    loose.write_text(secrets.token_bytes(16).hex())
    os.chmod(loose, 0o644)
    configs = [
        PdConfig("pd-1", OsdpSettings(port="/dev/null", address=1, scbk_file=str(good))),
        PdConfig("pd-2", OsdpSettings(port="/dev/null", address=2, scbk_file=str(loose))),
        PdConfig("pd-3", OsdpSettings(port="/dev/null", address=3, scbk_file=str(tmp_path / "missing.key"))),
    ]
    with caplog.at_level(logging.WARNING, logger="drivers.osdp"):
        driver = OsdpDriver(configs, None)
    assert driver.keys() == ["pd-1"]
    assert sum("not driven" in r.getMessage() for r in caplog.records) == 2
