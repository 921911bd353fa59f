"""Bluetooth LE locks (bleak): so far the site-file schema and a schema-only registry entry; the
driver comes next."""
