"""One OSDP peripheral's settings: the serial line it hangs on, its bus address, its secure-channel
key (by reference: the key itself never sits in a site file or the database) and its wiring."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from drivers.family import ControllerSettings


class OsdpSettings(ControllerSettings):
    port: str = Field(min_length=1, description="the RS-485 adapter's device; every PD on one port shares one line")
    address: int = Field(default=0, ge=0, le=126)
    baud: Literal[9600, 19200, 38400, 57600, 115200, 230400] = 115200
    scbk_file: str | None = Field(
        default=None,
        description="file holding this PD's secure-channel base key (32 hex digits, mode 0600); "
        "none: plain OSDP without a secure channel (logged as a warning)",
    )
    install_mode: bool = Field(
        default=False,
        description="first keying: the PD still has the default key (SCBK-D); the gateway writes a fresh key "
        "to scbk_file if it has none and sets it with KEYSET. Turn it off once keyed.",
    )
    door_output: int = Field(default=1, ge=1, le=64, description="the output a granted presentation releases")
    pulse_seconds: int = Field(default=5, ge=1, le=600, description="how long a grant releases the door")
    held_open_seconds: int = Field(default=30, ge=1, le=3600, description="door open this long after a grant: alarm")
    card_data: Literal["uid", "wiegand"] = Field(
        default="uid",
        description="how a raw card read is spelled: uid (the bytes in hex) or wiegand (26/34-bit frames "
        "without their parity bits, as a decimal number)",
    )
    contacts: dict[int, int] = Field(default_factory=dict, description="door output -> its door-contact input")
    key_slots: dict[int, int] = Field(
        default_factory=dict, description="key cabinets: slot output -> its key-present input"
    )

    @model_validator(mode="after")
    def _wiring(self) -> OsdpSettings:
        for name, table in (("contacts", self.contacts), ("key_slots", self.key_slots)):
            if any(not 1 <= k <= 64 or not 1 <= v <= 64 for k, v in table.items()):
                raise ValueError(f"{name}: outputs and inputs are numbered from 1 to 64")
        if self.install_mode and not self.scbk_file:
            raise ValueError("install_mode needs scbk_file: the key it sets must be kept somewhere")
        return self
