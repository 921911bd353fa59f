"""One BLE lock's settings: its radio address."""

from __future__ import annotations

from pydantic import Field

from drivers.family import ControllerSettings


class BleSettings(ControllerSettings):
    address: str = Field(pattern=r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$")
