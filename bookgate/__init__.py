"""The composition root: app factory, CLI, demo, driver wiring and site provisioning.

It may import every package; nothing imports it."""

__version__ = "0.1.0"
