"""One esp-rfid controller's settings, as a site file gives them (``settings:`` of a controller
whose ``driver`` is ``esprfid``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from drivers.family import ControllerSettings

Reader = Literal["mfrc522", "wiegand", "pn532", "rdm6300", "rdm6300+mfrc522", "rdm6300+wiegand", "rdm6300+pn532"]


class EsprfidSettings(ControllerSettings):
    topic: str = Field(min_length=1, max_length=120, pattern=r"^[^#+\s]+$")
    doorip: str = Field(
        pattern=r"^\d{1,3}(\.\d{1,3}){3}$", description="the device's IP: esp-rfid checks it in commands"
    )
    mqtt_username: str | None = None
    reader: Reader = Field(
        default="mfrc522",
        description="the device's reader type (its hardware setting): how it spells the cards it reads",
    )
    heartbeat_seconds: int = Field(
        default=180, ge=1, le=86_400, description="the device's heartbeat period (firmware default 180 s)"
    )

    @field_validator("topic")
    @classmethod
    def _base_topic(cls, v: str) -> str:
        # the driver appends /cmd, /send and /avty: a trailing slash would make them a level deeper
        if v.endswith("/"):
            raise ValueError("a base topic does not end with '/'")
        return v
