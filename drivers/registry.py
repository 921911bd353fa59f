"""The one registry of driver families, by controller kind.

Everything outside ``drivers`` that needs to know which kinds of controller exist asks here: the
site-file import (is this ``driver`` known, are its ``settings`` right), the composition root (build
one driver per kind present in the database), ``bookgate sim KIND`` and the MQTT account files
(which kinds speak MQTT, on which topic). A new family adds its ``ENTRY`` to ``FAMILIES`` below and
touches nothing else; nothing registers itself by being imported.

A family module should import its protocol library (libosdp, bleak) inside its factory when that
library may be missing here: importing this registry must stay possible wherever site files are
checked.

The registry is a value: ``REGISTRY`` holds the shipped families and never changes;
``with_family`` returns a new registry with one more (a test's fake, an extension), which the caller
passes in where a registry is taken.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ValidationError

from drivers.ble.family import ENTRY as BLE
from drivers.esprfid.family import ENTRY as ESPRFID
from drivers.family import DriverFamily, Simulator
from drivers.osdp.family import ENTRY as OSDP

__all__ = ["FAMILIES", "REGISTRY", "DriverRegistry"]

FAMILIES: tuple[DriverFamily, ...] = (ESPRFID, OSDP, BLE)


class DriverRegistry:
    """Driver families by kind (immutable)."""

    def __init__(self, families: Iterable[DriverFamily]) -> None:
        table: dict[str, DriverFamily] = {}
        for family in families:
            if family.kind in table:
                raise ValueError(f"two driver families for kind {family.kind!r}")
            table[family.kind] = family
        self._families: Mapping[str, DriverFamily] = MappingProxyType(table)

    def with_family(self, family: DriverFamily) -> DriverRegistry:
        """A new registry where ``family`` is added, or replaces the one of its kind."""
        return DriverRegistry([*(f for f in self._families.values() if f.kind != family.kind), family])

    @property
    def families(self) -> Mapping[str, DriverFamily]:
        return self._families

    def kinds(self) -> list[str]:
        return list(self._families)

    def get(self, kind: str) -> DriverFamily | None:
        return self._families.get(kind)

    def __contains__(self, kind: object) -> bool:
        return kind in self._families

    # ------------------------------------------------------------------ settings

    def parse_settings(self, kind: str, settings: Any) -> BaseModel:
        """One controller's settings, validated by its family's schema.

        Raises ``KeyError`` for a kind no family handles, pydantic's ``ValidationError`` otherwise."""
        family = self._families.get(kind)
        if family is None:
            raise KeyError(self.unknown(kind))
        return family.settings.model_validate(settings)

    def unknown(self, kind: str) -> str:
        return f"unknown driver {kind!r} (one of: {', '.join(self._families)})"

    def check_controller(self, kind: str, settings: Any) -> list[tuple[str, str]]:
        """What is wrong with one controller of a site file, as (path within the controller, reason):
        ``("driver", "unknown driver ...")`` or ``("settings.doorip", "String should match ...")``."""
        if kind not in self._families:
            return [("driver", self.unknown(kind))]
        try:
            self.parse_settings(kind, settings)
        except ValidationError as exc:
            return [
                (".".join(["settings", *(str(p) for p in err["loc"])]), err["msg"].removeprefix("Value error, "))
                for err in exc.errors()
            ]
        return []

    # ------------------------------------------------------------------ what the shell asks

    def mqtt_kinds(self) -> list[str]:
        """The kinds whose controllers talk to the gateway through its MQTT broker."""
        return [f.kind for f in self._families.values() if f.transport == "mqtt"]

    def mqtt_topic(self, kind: str, settings: Any) -> str | None:
        """The base topic of an MQTT controller; None for another transport or unusable settings."""
        family = self._families.get(kind)
        if family is None or family.mqtt_topic is None:
            return None
        try:
            return family.mqtt_topic(family.settings.model_validate(settings))
        except ValidationError:
            return None

    def simulators(self) -> dict[str, Simulator]:
        """``bookgate sim KIND``: the kinds that ship a simulator."""
        return {f.kind: f.simulator for f in self._families.values() if f.simulator is not None}


REGISTRY = DriverRegistry(FAMILIES)
