"""Bookgate shell: database, auth, audit, outbox, app factory, CLI and portal wiring."""

__version__ = "0.1.0"
