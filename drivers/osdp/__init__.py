"""OSDP readers and controllers over RS-485 (libosdp over pyserial): so far the site-file schema
and a schema-only registry entry; the driver comes next."""
