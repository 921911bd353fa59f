"""The drivers' registry and the host built from it: the shipped families, the esp-rfid driver built
from the database, and a family registered by a test (a tiny driver of its own) receiving the
commands routed to its controllers and reporting back, beside another one."""

from __future__ import annotations

import logging
import typing
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import select

from access.models import Controller
from access.protocol import (
    Booted,
    Command,
    CommandResult,
    ControllerDriver,
    FullSync,
    Grant,
    Heartbeat,
    Report,
    ReportCallback,
    Unlock,
)
from bookgate.controllers import start_drivers
from config import Settings
from core.db import read_session, utcnow, write_session
from drivers.ble.settings import BleSettings
from drivers.esprfid import EsprfidDriver, codec
from drivers.esprfid.settings import EsprfidSettings
from drivers.family import DriverContext, DriverFamily
from drivers.osdp.settings import OsdpSettings
from drivers.registry import REGISTRY, DriverRegistry
from tests.drivers.conftest import mqtt_url  # noqa: F401 - fixture reused
from tests.drivers.helpers import wait_until

ESPRFID_KEYS = ["courts-ctl", "entrance-ctl", "rooms-ctl"]


def _settings(url: str = "") -> Settings:
    return Settings(mqtt_url=url, _env_file=None)


# --------------------------------------------------------------------------- the table


def test_the_shipped_families():
    assert REGISTRY.kinds() == ["esprfid", "osdp", "ble"]
    assert REGISTRY.families["esprfid"].factory is not None
    assert REGISTRY.families["osdp"].factory is not None
    assert REGISTRY.mqtt_kinds() == ["esprfid"]
    assert {"esprfid", "osdp"} <= set(REGISTRY.simulators())
    assert REGISTRY.mqtt_topic("esprfid", {"topic": "a/b", "doorip": "10.0.0.1"}) == "a/b"
    assert REGISTRY.mqtt_topic("esprfid", {"topic": "a/#"}) is None  # unusable settings: no ACL for them
    assert REGISTRY.mqtt_topic("osdp", {"port": "/dev/ttyUSB0"}) is None


def test_esprfid_schema_knows_every_reader_the_driver_knows():
    assert set(typing.get_args(EsprfidSettings.model_fields["reader"].annotation)) == set(codec.READERS)


def test_a_controller_is_checked_by_its_family():
    assert REGISTRY.check_controller("esprfid", {"topic": "t", "doorip": "10.0.0.1"}) == []
    assert REGISTRY.check_controller("esprfid", {"topic": "t/", "doorip": "10.0.0.1"}) == [
        ("settings.topic", "a base topic does not end with '/'")
    ]
    assert REGISTRY.check_controller("osdp", {"port": "/dev/ttyS0", "baud": 1200})[0][0] == "settings.baud"
    assert REGISTRY.check_controller("zwave", {}) == [("driver", "unknown driver 'zwave' (one of: esprfid, osdp, ble)")]


def test_a_registry_is_a_value():
    fake = DriverFamily(kind="fake", title="Fake", transport="serial", settings=OsdpSettings)
    more = REGISTRY.with_family(fake)
    assert "fake" in more and "fake" not in REGISTRY
    with pytest.raises(ValueError, match="two driver families"):
        DriverRegistry([fake, fake])
    with pytest.raises(ValueError, match="base topic"):
        DriverFamily(kind="m", title="M", transport="mqtt", settings=OsdpSettings)


# --------------------------------------------------------------------------- built from the database


def test_the_esprfid_driver_is_built_from_the_database(engine, example_site, mqtt_url, caplog):  # noqa: F811
    with caplog.at_level(logging.INFO, logger="bookgate.controllers"):
        host = start_drivers(engine, _settings(mqtt_url))
    assert host is not None
    try:
        assert "esprfid" in host.drivers
        assert host.routes.get("garage-ctl") == "ble"  # BLE locks are driven wherever bleak runs
        driver = host.drivers["esprfid"]
        assert isinstance(driver, EsprfidDriver) and sorted(driver.keys()) == ESPRFID_KEYS
        assert sorted(k for k, kind in host.routes.items() if kind == "esprfid") == ESPRFID_KEYS
        assert wait_until(lambda: host.connected, 10)
        assert driver.snapshot("entrance-ctl").key == "entrance-ctl"
    finally:
        host.stop()
    not_driven = [r.getMessage() for r in caplog.records if "not driven" in r.getMessage()]
    assert any("osdp" in m and "cabinet-ctl" in m for m in not_driven), not_driven  # no serial port here


def test_no_broker_no_host(engine, example_site, caplog):
    with caplog.at_level(logging.INFO):
        host = start_drivers(engine, _settings(""))
    if host is not None:  # the site's BLE lock is driven all the same (offline here: no adapter)
        host.stop()
        assert "esprfid" not in host.drivers
    assert any("no MQTT broker configured" in r.getMessage() for r in caplog.records)


def test_refused_or_unknown_controllers_are_left_out(engine, example_site, mqtt_url, caplog):  # noqa: F811
    with write_session(engine) as s:
        courts = s.exec(select(Controller).where(Controller.key == "courts-ctl")).one()
        courts.settings = {"topic": "x/y"}  # stored before the schema said doorip is required
        garage = s.exec(select(Controller).where(Controller.key == "garage-ctl")).one()
        garage.driver = "zwave"
        s.add(courts)
        s.add(garage)
    with caplog.at_level(logging.INFO, logger="bookgate.controllers"):
        host = start_drivers(engine, _settings(mqtt_url))
    assert host is not None
    try:
        assert sorted(host.keys()) == ["entrance-ctl", "rooms-ctl"]
        result = host.send("courts-ctl", Unlock("u-1", 1))
        assert not result.ok and "no driven controller" in result.detail
    finally:
        host.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert any("courts-ctl" in m and "doorip" in m for m in messages), messages
    assert any("zwave" in m and "no driver family" in m for m in messages), messages


# --------------------------------------------------------------------------- a family of the test's own


class FakeDriver:
    """The smallest ControllerDriver: acknowledges what it is sent, reports what the test says."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.known = set(keys)
        self.sent: list[tuple[str, Command]] = []
        self.callbacks: list[ReportCallback] = []
        self.stale: list[str] = []
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    async def send(self, controller_key: str, command: Command) -> CommandResult:
        if controller_key not in self.known:
            raise KeyError(controller_key)
        self.sent.append((controller_key, command))
        return CommandResult(command.command_id, True, "fake", 1)

    def subscribe(self, callback: ReportCallback) -> Callable[[], None]:
        self.callbacks.append(callback)
        return lambda: self.callbacks.remove(callback)

    def stale_controllers(self, now: Any) -> list[str]:
        return list(self.stale)

    def report(self, report: Report) -> None:
        for callback in list(self.callbacks):
            callback(report)


def _fake_family(kind: str, schema: type, built: dict[str, FakeDriver], seen: dict[str, list]) -> DriverFamily:
    def factory(controllers: Sequence[tuple[str, Any]], context: DriverContext) -> FakeDriver:
        seen[kind] = list(controllers)
        built[kind] = FakeDriver([key for key, _ in controllers])
        return built[kind]

    return DriverFamily(kind=kind, title=f"fake {kind}", transport="serial", settings=schema, factory=factory)


def _state(engine, key: str) -> str:
    with read_session(engine) as s:
        return s.exec(select(Controller).where(Controller.key == key)).one().state


def test_a_registered_family_is_driven_and_commands_are_routed_by_key(engine, example_site):
    assert isinstance(FakeDriver([]), ControllerDriver)
    built: dict[str, FakeDriver] = {}
    seen: dict[str, list] = {}
    registry = REGISTRY.with_family(_fake_family("osdp", OsdpSettings, built, seen)).with_family(
        _fake_family("ble", BleSettings, built, seen)
    )
    host = start_drivers(engine, _settings(""), registry=registry)  # no broker: esp-rfid is not driven
    assert host is not None
    try:
        assert set(host.drivers) == {"osdp", "ble"} and all(d.started for d in built.values())
        (key, settings), (other, _) = seen["osdp"]  # two PDs on the garage's OSDP line
        assert key == "cabinet-ctl" and (settings.port, settings.address, settings.baud) == ("/dev/ttyUSB0", 1, 115200)
        assert other == "garage-door-ctl"
        now = utcnow()
        grant = Grant("g-1", 1, "04a1b2c3", "Alice", now, now + timedelta(hours=1))
        unlock = Unlock("u-1", 1)
        results = host.send_many([("cabinet-ctl", grant), ("garage-ctl", unlock), ("courts-ctl", Unlock("u-2", 1))])
        assert [r.ok for r in results] == [True, True, False]
        assert "no driven controller 'courts-ctl'" in results[2].detail
        assert built["osdp"].sent == [("cabinet-ctl", grant)]
        assert built["ble"].sent == [("garage-ctl", unlock)]

        # reports from any driver reach the host: a heartbeat marks online, a boot asks for a re-sync
        built["ble"].report(Heartbeat("garage-ctl", utcnow()))
        assert wait_until(lambda: _state(engine, "garage-ctl") == "online", 5)
        built["osdp"].report(Booted("cabinet-ctl", utcnow()))
        assert wait_until(lambda: any(isinstance(c, FullSync) for _, c in built["osdp"].sent), 5)
        assert wait_until(lambda: _state(engine, "cabinet-ctl") == "online", 5)

        # staleness is merged over every driver
        built["ble"].stale = ["garage-ctl"]
        assert host.supervise() == 1 and _state(engine, "garage-ctl") == "offline"
        assert host.reconcile_all() == 0  # cabinet-ctl is online and matches (the fake reports no change)
    finally:
        host.stop()
    assert all(d.stopped and not d.callbacks for d in built.values())


def test_a_granted_entry_reported_by_a_driver_reaches_the_listeners_the_app_lends(engine, example_site, make_user):
    """The host records door events with the entry listeners it was given (an object, not a module
    registry): a granted entry inside a window is offered to the listener of the window's source."""
    from access.decisions import note_credential
    from access.events import EntryListeners
    from access.models import AccessEvent, Credential
    from access.protocol import DoorEvent
    from access.windows import set_windows
    from bms.models import Resource

    built: dict[str, FakeDriver] = {}
    registry = REGISTRY.with_family(_fake_family("osdp", OsdpSettings, built, {}))
    heard: list[tuple] = []
    listeners = EntryListeners({"visit": lambda s, source_id, user_id, at, door: heard.append((source_id, door))})
    user, _ = make_user({"role": "resident", "site": "les-tilleuls"})
    now = utcnow()
    with write_session(engine) as s:
        garage = s.exec(select(Resource).where(Resource.key == "visitor-parking")).first()
        assert garage is not None
        cred = Credential(user_id=user.id, kind="badge", format="uid", value="04a1b2c3", compact="4a1b2c3")
        s.add(cred)
        s.flush()
        note_credential(s, cred.id)
        set_windows(
            s,
            "visit",
            7,
            garage.id,
            [user.id],
            now - timedelta(minutes=5),
            now + timedelta(hours=1),
            "badge",
            active=True,
        )
    host = start_drivers(engine, _settings(""), listeners=listeners, registry=registry)
    assert host is not None
    try:
        built["osdp"].report(DoorEvent("garage-ctl", "granted", "04a1b2c3", 1, utcnow()))
        assert wait_until(lambda: heard == [(7, "garage-gate")], 5), heard

        def stored() -> list[AccessEvent]:
            with read_session(engine) as s:
                return list(s.exec(select(AccessEvent)).all())

        # the listener runs inside the transaction that stores the event: the row is there once it commits
        assert wait_until(lambda: len(stored()) == 1, 5)
        (event,) = stored()
        assert (event.user_id, event.source) == (user.id, "visit:7")
    finally:
        host.stop()
