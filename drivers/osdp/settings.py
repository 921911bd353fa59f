"""One OSDP peripheral's settings: the serial line it hangs on and its bus address."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from drivers.family import ControllerSettings


class OsdpSettings(ControllerSettings):
    port: str = Field(min_length=1)
    address: int = Field(default=0, ge=0, le=126)
    baud: Literal[9600, 19200, 38400, 57600, 115200, 230400] = 115200
