"""The OSDP family's registry entry: schema only until the driver lands (its controllers are
accepted in site files and stored, not driven)."""

from __future__ import annotations

from drivers.family import DriverFamily
from drivers.osdp.settings import OsdpSettings

ENTRY = DriverFamily(kind="osdp", title="OSDP (RS-485)", transport="serial", settings=OsdpSettings)
