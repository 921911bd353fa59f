"""Controller drivers (esp-rfid over MQTT, OSDP over serial, BLE locks) and their simulators."""
