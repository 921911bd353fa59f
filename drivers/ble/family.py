"""The BLE family's registry entry: one ``BleDriver`` for every active BLE lock.

The driver is built wherever bleak imports; a host without a Bluetooth adapter still gets it, and
its locks show ``offline`` with the reason (the driver finds that out, it is not guessed here)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from access.protocol import ControllerDriver
from drivers.ble.settings import BleSettings
from drivers.family import DriverContext, DriverFamily

log = logging.getLogger("drivers.ble")


def key_label(address: str) -> str:
    """What the gateway's key derivation is asked for, for the lock at ``address``."""
    return f"ble-lock\x1f{address.upper()}"


def read_key_file(path: str) -> bytes:
    key = bytes.fromhex(Path(path).read_text().strip())
    if len(key) != 32:
        raise ValueError("a lock key file holds 64 hex digits")
    return key


def build(controllers: Sequence[tuple[str, BleSettings]], context: DriverContext) -> ControllerDriver | None:
    from drivers.ble.driver import BleDriver, LockConfig  # bleak only where BLE locks are driven

    configs = []
    for key, s in controllers:
        try:
            if s.key_file:
                secret = read_key_file(s.key_file)
            elif context.device_key is not None:
                secret = context.device_key(key_label(s.address))
            else:
                raise ValueError("no key_file and no key derivation from the gateway")
            configs.append(LockConfig(key, s.address.upper(), secret, s.adapter, s.stay_connected, s.idle_seconds))
        except (OSError, ValueError) as exc:  # the message never holds the key itself
            log.warning("BLE lock %s not driven: its key is unusable (%s)", key, exc)
    if not configs:
        return None
    return BleDriver(configs)


def simulate(argv: Sequence[str]) -> int:
    from drivers.ble.emulator import main

    return main(argv)


ENTRY = DriverFamily(
    kind="ble", title="Bluetooth LE lock", transport="ble", settings=BleSettings, factory=build, simulator=simulate
)
