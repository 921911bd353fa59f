"""A bleak backend over bumble's host stack: bleak's public API on any HCI transport bumble opens.

``BleakScanner(backend=BumbleScanner, radio=r)`` and ``BleakClient(address, backend=BumbleClient,
radio=r)`` behave as with bleak's platform backends, but the Bluetooth host is bumble's (in this
process) and the controller is whatever HCI transport the ``BumbleRadio`` opens: a USB or UART
dongle (``usb:0``, ``serial:/dev/ttyUSB0``) or a virtual controller on bumble's link
(``tcp-client:127.0.0.1:9901``, as the emulated locks of ``bookgate sim ble`` offer). bleak passes
unknown keyword arguments through to its backend, which is how the radio reaches these classes.

One radio is one bumble ``Device`` acting as a central. It is opened on first use, on the event
loop that uses it (bleak objects, like bumble's, belong to one loop), and reopened after its
transport fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any

from bleak.args import SizedBuffer
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError, BleakGATTProtocolError
from bumble import att, core, gatt
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt_client import CharacteristicProxy
from bumble.hci import Address
from bumble.transport import open_transport
from bumble.transport.common import Transport

log = logging.getLogger("drivers.ble.bumble")


def static_random_address() -> str:
    """A fresh static random address (its two top bits set), as a central picks at power-on."""
    raw = bytearray(secrets.token_bytes(6))
    raw[0] |= 0xC0
    return ":".join(f"{b:02X}" for b in raw)


class BumbleRadio:
    """One HCI transport and the bumble central on it."""

    def __init__(self, transport: str, address: str | None = None) -> None:
        self.transport_spec = transport
        self.address = address or static_random_address()
        self._transport: Transport | None = None
        self._device: Device | None = None
        self._opening: asyncio.Lock | None = None
        self._scanners = 0
        self._on_lost: set[Callable[[], None]] = set()

    async def device(self) -> Device:
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._device is None:
                try:
                    transport = await open_transport(self.transport_spec)
                except Exception as exc:  # no such port, refused, no USB device
                    raise BleakError(f"cannot open HCI transport {self.transport_spec}: {exc}") from exc
                device = Device.with_hci("Bookgate gateway", Address(self.address), transport.source, transport.sink)
                try:
                    await asyncio.wait_for(device.power_on(), 5.0)
                except Exception as exc:
                    await transport.close()
                    raise BleakError(f"the controller on {self.transport_spec} does not answer: {exc}") from exc
                self._transport, self._device = transport, device
                # a transport that ends (the controller went away) drops this device: reopen next time
                terminated = getattr(transport.source, "terminated", None)
                if isinstance(terminated, asyncio.Future):
                    terminated.add_done_callback(lambda _: self._lost(device))
            return self._device

    def _lost(self, device: Device) -> None:
        if self._device is device:
            log.info("HCI transport %s closed", self.transport_spec)
            self._device, self._transport = None, None
            # the controller is gone and with it every link: no disconnection event will come
            for callback in list(self._on_lost):
                callback()

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` if the transport is lost; returns the way to stop watching."""
        self._on_lost.add(callback)
        return lambda: self._on_lost.discard(callback)

    async def close(self) -> None:
        transport, self._transport, self._device = self._transport, None, None
        if transport is not None:
            with contextlib.suppress(Exception):
                await transport.close()

    async def scanning(self, on_advertisement: Any, start: bool) -> Device:
        device = await self.device()
        if start:
            device.on("advertisement", on_advertisement)
            self._scanners += 1
            if self._scanners == 1:
                await device.start_scanning(filter_duplicates=False)
        else:
            device.remove_listener("advertisement", on_advertisement)
            self._scanners = max(0, self._scanners - 1)
            if self._scanners == 0:
                with contextlib.suppress(Exception):
                    await device.stop_scanning()
        return device


def _radio(kwargs: dict[str, Any]) -> BumbleRadio:
    radio = kwargs.get("radio")
    if not isinstance(radio, BumbleRadio):
        raise BleakError("the bumble backend needs radio=BumbleRadio(...)")
    return radio


class BumbleScanner(BaseBleakScanner):
    def __init__(
        self, detection_callback: Any, service_uuids: list[str] | None, scanning_mode: str = "active", **kwargs: Any
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._radio = _radio(kwargs)
        self._active = scanning_mode != "passive"
        self._scanning = False

    def _on_advertisement(self, adv: Advertisement) -> None:
        data = adv.data
        uuids = [
            str(u).lower()
            for t in (
                data.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                data.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                data.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
            )
            for u in (data.get(t) or [])
        ]
        if not self.is_allowed_uuid(uuids):
            return
        name = data.get(data.COMPLETE_LOCAL_NAME) or data.get(data.SHORTENED_LOCAL_NAME)
        address = str(adv.address).split("/")[0].upper()
        ad = AdvertisementData(
            local_name=name if isinstance(name, str) else None,
            manufacturer_data={},
            service_data={},
            service_uuids=uuids,
            tx_power=None if adv.tx_power == adv.TX_POWER_NOT_AVAILABLE else adv.tx_power,
            rssi=adv.rssi,
            platform_data=(adv,),
        )
        device = self.create_or_update_device(address, address, ad.local_name, adv.address, ad)
        self.call_detection_callbacks(device, ad)

    async def start(self) -> None:
        self.seen_devices = {}
        await self._radio.scanning(self._on_advertisement, True)
        self._scanning = True

    async def stop(self) -> None:
        if self._scanning:
            self._scanning = False
            await self._radio.scanning(self._on_advertisement, False)


_PROPERTIES = (
    (gatt.Characteristic.Properties.BROADCAST, "broadcast"),
    (gatt.Characteristic.Properties.READ, "read"),
    (gatt.Characteristic.Properties.WRITE_WITHOUT_RESPONSE, "write-without-response"),
    (gatt.Characteristic.Properties.WRITE, "write"),
    (gatt.Characteristic.Properties.NOTIFY, "notify"),
    (gatt.Characteristic.Properties.INDICATE, "indicate"),
)


class BumbleClient(BaseBleakClient):
    def __init__(self, address_or_ble_device: BLEDevice | str, **kwargs: Any) -> None:
        super().__init__(
            address_or_ble_device,
            disconnected_callback=kwargs.get("disconnected_callback"),
            timeout=kwargs.get("timeout", 10.0),
        )
        self._radio = _radio(kwargs)
        self._connection: Connection | None = None
        self._peer: Peer | None = None
        self._subscriptions: dict[int, Any] = {}
        self._unwatch: Callable[[], None] | None = None

    @property
    def name(self) -> str:
        return self.address

    @property
    def mtu_size(self) -> int:
        return self._connection.att_mtu if self._connection is not None else 23

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        device = await self._radio.device()
        try:
            connection = await asyncio.wait_for(device.connect(Address(self.address)), self._timeout)
        except (TimeoutError, core.BaseBumbleError, core.TimeoutError) as exc:
            raise BleakError(f"cannot connect to {self.address}: {exc!r}") from exc
        self._connection = connection
        connection.on("disconnection", self._on_disconnection)
        self._unwatch = self._radio.watch(lambda: self._on_disconnection(0))
        self._peer = Peer(connection)
        try:
            await asyncio.wait_for(self._discover(), self._timeout)
        except Exception:
            await self.disconnect()
            raise

    async def _discover(self) -> None:
        assert self._peer is not None
        peer = self._peer
        with contextlib.suppress(Exception):
            await peer.request_mtu(247)
        collection = BleakGATTServiceCollection()
        for service in await peer.discover_services():
            bservice = BleakGATTService(service, service.handle, str(service.uuid.to_hex_str("-")).lower())
            collection.add_service(bservice)
            for char in await peer.discover_characteristics(service=service):
                props = [name for flag, name in _PROPERTIES if char.properties & flag]
                bchar = BleakGATTCharacteristic(
                    char,
                    char.handle,
                    str(char.uuid.to_hex_str("-")).lower(),
                    props,  # type: ignore[arg-type]
                    lambda: self.mtu_size - 3,
                    bservice,
                )
                collection.add_characteristic(bchar)
        self.services = collection

    def _on_disconnection(self, reason: int) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        self._connection, self._peer = None, None
        self._subscriptions.clear()
        callback = self._disconnected_callback
        if callback is not None:
            callback()

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        self._disconnected_callback = None  # bleak calls it only for unsolicited disconnections
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        with contextlib.suppress(Exception):
            await connection.disconnect()
        self._connection, self._peer = None, None

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("the Bookgate lock profile needs no pairing")

    async def unpair(self) -> None:
        raise NotImplementedError("the Bookgate lock profile needs no pairing")

    def _peer_or_fail(self) -> Peer:
        if self._peer is None:
            raise BleakError("Not connected")
        return self._peer

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, **kwargs: Any) -> bytearray:
        try:
            return bytearray(await self._peer_or_fail().read_value(characteristic.handle))
        except att.ATT_Error as exc:
            raise BleakGATTProtocolError(exc.error_code) from exc

    async def read_gatt_descriptor(self, descriptor: BleakGATTDescriptor, **kwargs: Any) -> bytearray:
        try:
            return bytearray(await self._peer_or_fail().read_value(descriptor.handle))
        except att.ATT_Error as exc:
            raise BleakGATTProtocolError(exc.error_code) from exc

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool) -> None:
        try:
            await self._peer_or_fail().write_value(characteristic.handle, bytes(data), with_response=response)
        except att.ATT_Error as exc:
            raise BleakGATTProtocolError(exc.error_code) from exc

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        try:
            await self._peer_or_fail().write_value(descriptor.handle, bytes(data), with_response=True)
        except att.ATT_Error as exc:
            raise BleakGATTProtocolError(exc.error_code) from exc

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        proxy = characteristic.obj
        if not isinstance(proxy, CharacteristicProxy):
            raise BleakError("not a characteristic of this connection")

        def deliver(value: bytes) -> None:
            callback(bytearray(value))

        await self._peer_or_fail().subscribe(proxy, deliver)
        self._subscriptions[characteristic.handle] = deliver

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        deliver = self._subscriptions.pop(characteristic.handle, None)
        if deliver is not None and self._peer is not None:
            await self._peer.unsubscribe(characteristic.obj, deliver)
