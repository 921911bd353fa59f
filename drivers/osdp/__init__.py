"""OSDP readers, door modules and key cabinets over RS-485 (libosdp over pyserial), and their simulator."""
