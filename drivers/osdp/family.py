"""The OSDP family's registry entry: one ``OsdpDriver`` for every active OSDP controller, one line per
serial port, deciding presentations with the decision function the gateway lends (``context.decide``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from access.protocol import ControllerDriver
from drivers.family import DriverContext, DriverFamily
from drivers.osdp.settings import OsdpSettings

log = logging.getLogger("drivers.osdp")


def build(controllers: Sequence[tuple[str, OsdpSettings]], context: DriverContext) -> ControllerDriver | None:
    from drivers.osdp.driver import OsdpDriver, PdConfig  # libosdp and pyserial only where a line is driven

    configs = []
    for key, s in controllers:
        if not os.path.exists(s.port):
            log.warning("osdp controller %s not driven: serial port %s not found on this host", key, s.port)
            continue
        configs.append(PdConfig(key, s))
    if not configs:
        return None
    if context.decide is None:
        log.warning("OSDP: no online-decision index given, every presentation will be refused")
    driver = OsdpDriver(configs, context.decide)  # a PD whose key file is unusable is left out (logged)
    if not driver.keys():
        return None
    log.info("OSDP: %d PD(s) on %d line(s)", len(configs), len(driver.lines))
    return driver


def simulate(argv: Sequence[str]) -> int:
    from drivers.osdp.simulator import main  # only the `sim` command needs the simulator

    return main(argv)


ENTRY = DriverFamily(
    kind="osdp", title="OSDP (RS-485)", transport="serial", settings=OsdpSettings, factory=build, simulator=simulate
)
