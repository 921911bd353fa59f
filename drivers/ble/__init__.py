"""Bluetooth LE locks speaking the Bookgate lock profile: the profile, the driver (bleak), a bleak
backend over bumble's host stack, and locks emulated with bumble for tests, the demo and
`bookgate sim ble`."""
