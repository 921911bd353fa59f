"""One BLE lock's settings: its radio address, the adapter that reaches it, and its key's origin."""

from __future__ import annotations

from pydantic import Field

from drivers.family import ControllerSettings


class BleSettings(ControllerSettings):
    address: str = Field(pattern=r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$")
    adapter: str = Field(
        default="hci0",
        min_length=1,
        max_length=200,
        pattern=r"^(hci\d+|bumble:\S+)$",
        description="a BlueZ adapter (hci0), or bumble's host stack on an HCI transport "
        "(bumble:usb:0, bumble:serial:/dev/ttyUSB0, bumble:tcp-client:127.0.0.1:9901 for `bookgate sim ble`)",
    )
    key_file: str | None = Field(
        default=None,
        description="file holding the lock's 32-byte key (64 hex digits, mode 0600); none: the key is derived "
        "from the gateway's credential key and the lock's address (HKDF-SHA256), the same at every start",
    )
    stay_connected: bool = Field(
        default=True,
        description="keep the lock connected so its access events arrive as they happen; false: connect "
        "for each command and disconnect after idle_seconds",
    )
    idle_seconds: int = Field(default=30, ge=1, le=3600)
