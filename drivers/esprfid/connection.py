"""The broker connection of the esp-rfid driver and simulator: the shared MQTT module, under the
name the driver's tests and benchmarks have always imported it by."""

from drivers.mqtt import DEFAULT_PORTS, MqttSettings, make_client

__all__ = ["DEFAULT_PORTS", "MqttSettings", "make_client"]
