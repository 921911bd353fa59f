"""The BLE family's registry entry: schema only until the driver lands (its controllers are
accepted in site files and stored, not driven)."""

from __future__ import annotations

from drivers.ble.settings import BleSettings
from drivers.family import DriverFamily

ENTRY = DriverFamily(kind="ble", title="Bluetooth LE lock", transport="ble", settings=BleSettings)
