"""esp-rfid 2.x door controllers over MQTT: the driver (``driver``), the wire format (``codec``),
broker settings (``connection``) and emulated devices (``simulator``)."""

from drivers.esprfid.connection import MqttSettings
from drivers.esprfid.driver import ControllerConfig, ControllerState, EsprfidDriver, RetryPolicy

__all__ = ["ControllerConfig", "ControllerState", "EsprfidDriver", "MqttSettings", "RetryPolicy"]
