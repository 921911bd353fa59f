"""The esp-rfid family's registry entry: one ``EsprfidDriver`` (one broker connection) for every
active esp-rfid controller, when the gateway has a broker to reach them through."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from access.protocol import ControllerDriver
from drivers.esprfid.driver import ControllerConfig, EsprfidDriver
from drivers.esprfid.settings import EsprfidSettings
from drivers.family import DriverContext, DriverFamily
from drivers.mqtt import MqttSettings

log = logging.getLogger("drivers.esprfid")


def build(controllers: Sequence[tuple[str, EsprfidSettings]], context: DriverContext) -> ControllerDriver | None:
    if not context.mqtt_url:
        log.info(
            "no MQTT broker configured (BOOKGATE_MQTT_URL): %d esp-rfid controller(s) not driven", len(controllers)
        )
        return None
    configs = []
    for key, s in controllers:
        try:
            configs.append(
                ControllerConfig(key, s.topic, s.doorip, heartbeat_interval=float(s.heartbeat_seconds), reader=s.reader)
            )
        except ValueError as exc:  # settings stored before the schema refused them
            log.warning("esp-rfid %s not driven: %s", key, exc)
    if not configs:
        return None
    driver = EsprfidDriver(MqttSettings.from_url(context.mqtt_url), configs)
    log.info("esp-rfid: %d controller(s) through %s", len(configs), driver.settings.safe_url)
    return driver


def simulate(argv: Sequence[str]) -> int:
    from drivers.esprfid.simulator import main  # only the `sim` command needs the simulator

    return main(argv)


ENTRY = DriverFamily(
    kind="esprfid",
    title="esp-rfid (MQTT)",
    transport="mqtt",
    settings=EsprfidSettings,
    factory=build,
    simulator=simulate,
    mqtt_topic=lambda s: s.topic,
)
