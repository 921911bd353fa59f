"""What a driver family tells the gateway, so that the composition root can run it without
knowing it by name.

A family is one kind of controller: the ``driver`` of a controller in a site file and in the
database (``esprfid``, ``osdp``, ``ble``). Its entry says how one controller of that kind is
configured (a pydantic schema, checked when a site file is imported and again when the driver is
built) and how to build ONE driver for every active controller of that kind. A family whose driver
cannot run here (no broker configured, no serial port) builds nothing: its factory returns None
and its controllers are simply not driven. An entry without a factory is schema-only: its
controllers are accepted and stored, not driven.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from access.protocol import ControllerDriver, OnlineDecide

__all__ = ["ControllerSettings", "DriverContext", "DriverFactory", "DriverFamily", "Simulator", "Transport"]

Transport = Literal["mqtt", "serial", "ble"]


class ControllerSettings(BaseModel):
    """Base of a family's settings schema: unknown fields are refused (a typo must not pass)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class DriverContext:
    """What the gateway's own settings say that a family may need, beyond its controllers' settings.

    Built by the composition root from its settings: drivers never read the environment."""

    mqtt_url: str = ""  # the gateway's broker (BOOKGATE_MQTT_URL); empty when none is configured
    decide: OnlineDecide | None = None  # the online-decision index, for readers that hold no card list
    # A device's own secret (a BLE lock's key): label -> 32 bytes, derived by the composition root
    # from the gateway's credential key, so no device key is stored anywhere. None: none available.
    device_key: Callable[[str], bytes] | None = None


DriverFactory = Callable[[Sequence[tuple[str, Any]], DriverContext], ControllerDriver | None]
"""(controller key, validated settings) pairs of one kind, and the context -> one driver, or None
when the family cannot run here (it logs why)."""

Simulator = Callable[[Sequence[str]], int]
"""``bookgate sim KIND ARGS...``: the simulator's command line (ARGS) -> exit status."""


@dataclass(frozen=True, slots=True)
class DriverFamily:
    kind: str
    title: str  # for people: "esp-rfid (MQTT)"
    transport: Transport
    settings: type[BaseModel]  # ONE controller's settings (the `settings:` of a site file)
    factory: DriverFactory | None = None  # None: schema only, controllers accepted but not driven
    simulator: Simulator | None = None
    mqtt_topic: Callable[[Any], str | None] | None = None  # MQTT families: a controller's base topic

    def __post_init__(self) -> None:
        if self.transport == "mqtt" and self.mqtt_topic is None:
            raise ValueError(f"MQTT family {self.kind!r} must say which base topic a controller uses")
