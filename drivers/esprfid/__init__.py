"""esp-rfid 2.x door controllers over MQTT: the driver (``driver``), the wire format (``codec``),
one controller's site-file settings (``settings``), the registry entry that builds the driver
(``family``) and emulated devices (``simulator``). The broker connection is ``drivers.mqtt``."""

from drivers.esprfid.driver import ControllerConfig, ControllerState, EsprfidDriver, RetryPolicy
from drivers.mqtt import MqttSettings

__all__ = ["ControllerConfig", "ControllerState", "EsprfidDriver", "MqttSettings", "RetryPolicy"]
