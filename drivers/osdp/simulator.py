"""Simulated OSDP peripherals: libosdp's own PeripheralDevice on the far end of a pseudo-terminal.

``SimulatedLine`` opens a pty pair (``os.openpty``): the gateway opens the slave's name as its serial
port through pyserial, exactly as it opens an RS-485 adapter, and the simulated PDs hang on the
master. Like PDs on a real multi-drop line, every PD hears every byte the control panel sends (a
reader thread copies the master's input to each PD's channel) and each answers on the shared wire
when libosdp says its address was polled. Two PDs given one address both answer, as they would.

A ``SimulatedPd`` is what libosdp's PeripheralDevice makes of the protocol: it holds the output
and LED states the commands set (osdp_OUT control codes and timers as IEC 60839-11-5 defines them),
records every command, and presents cards, keypad digits, QR codes (card data in ASCII), input
changes and a local tamper as events. Its secure-channel key is its own: given at start, or none
(install mode: libosdp then accepts the default key and keeps the key a KEYSET brings).

Command line: ``bookgate sim osdp --pd 1 --pd 2 [--key-file ADDR=PATH]``, then lines on stdin:
``card ADDR HEX``, ``wiegand ADDR NUMBER``, ``pin ADDR DIGITS``, ``qr ADDR TEXT``,
``input ADDR N 0|1``, ``state``, ``quit``.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import threading
import time
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from osdp import (  # type: ignore[import-untyped]
    Capability,
    CardFormat,
    Channel,
    Command,
    Event,
    LibFlag,
    LogLevel,
    PDCapabilities,
    PDInfo,
    PeripheralDevice,
    StatusReportType,
)

__all__ = ["SimulatedLine", "SimulatedPd", "main"]


class _Wire:
    """The master end of the pty: one reader thread fans the control panel's bytes out to every PD."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        self._slave = slave  # kept open so the pty lives until the gateway opens it
        self._lock = threading.Lock()
        self._fd_lock = threading.Lock()  # no write while the fds are closed: their numbers are reused at once
        self._inboxes: list[bytearray] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._pump, name=f"osdp-wire {self.port}", daemon=True)
        self._thread.start()

    def inbox(self) -> bytearray:
        box = bytearray()
        with self._lock:
            self._inboxes.append(box)
        return box

    def _pump(self) -> None:
        import select

        while not self._closed.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(self.master, 4096)
            except OSError:
                return
            with self._lock:
                for box in self._inboxes:
                    box.extend(data)

    def take(self, box: bytearray, n: int) -> bytes:
        with self._lock:
            out = bytes(box[:n])
            del box[:n]
            return out

    def write(self, data: bytes) -> int:
        with self._fd_lock:
            if self._closed.is_set():
                return 0
            try:
                return os.write(self.master, data)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EIO, errno.EBADF):
                    return 0
                raise

    def close(self) -> None:
        # The pump must be gone before the fds close: a read on a closed number that the process has
        # just handed to another file would take that file's bytes.
        self._closed.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._fd_lock:
            for fd in (self.master, self._slave):
                try:
                    os.close(fd)
                except OSError:
                    pass


class _PdChannel(Channel):
    def __init__(self, wire: _Wire) -> None:
        super().__init__()
        self.wire = wire
        self.box = wire.inbox()
        self.muted = False  # a PD that went silent hears nothing and says nothing

    def read(self, max_bytes: int) -> bytes:
        data = self.wire.take(self.box, max_bytes)
        return b"" if self.muted else data

    def write(self, buf: bytes) -> int:
        return len(buf) if self.muted else self.wire.write(buf)

    def flush(self) -> None:
        self.wire.take(self.box, len(self.box))


@dataclass
class SimulatedPd:
    address: int
    outputs: int = 4
    inputs: int = 4
    scbk: bytes | None = None
    commands: list[dict] = field(default_factory=list)
    output_on: dict[int, bool] = field(default_factory=dict)  # 1-based output -> energised now
    received_at: list[tuple[float, dict]] = field(default_factory=list)
    keyed: bytes | None = None  # the key a KEYSET gave it
    _pd: Any = None
    _channel: Any = None
    _timers: dict[int, float] = field(default_factory=dict)
    _permanent: dict[int, bool] = field(default_factory=dict)
    _input_state: bytearray = field(default_factory=bytearray)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    on_command: Callable[[dict], None] | None = None

    def attach(self, wire: _Wire) -> None:
        caps = PDCapabilities(
            [
                (Capability.OutputControl, 1, self.outputs),
                (Capability.ContactStatusMonitoring, 1, self.inputs),
                (Capability.LEDControl, 1, 1),
                (Capability.AudibleControl, 1, 1),
                (Capability.Readers, 1, 1),
                (Capability.CardDataFormat, 1, 1),
            ]
        )
        self._channel = _PdChannel(wire)
        flags = [LibFlag.EnforceSecure] if self.scbk else []
        info = PDInfo(self.address, self._channel, scbk=self.scbk, flags=flags, name=f"sim-{self.address}")
        self._pd = PeripheralDevice(info, caps, log_level=LogLevel.Emergency, command_handler=self._command)
        self._input_state = bytearray(self.inputs)

    def _command(self, command: dict) -> tuple[int, dict | None]:
        now = time.monotonic()
        with self._lock:
            self.commands.append(dict(command))
            self.received_at.append((now, dict(command)))
            if command.get("command") == Command.Output:
                self._output(command, now)
            elif command.get("command") == Command.Keyset:
                self.keyed = bytes(command.get("data", b""))
        if self.on_command is not None:
            self.on_command(command)
        return 0, None

    def _output(self, command: dict, now: float) -> None:
        n = int(command.get("output_no", 0)) + 1
        code, timer = int(command.get("control_code", 0)), int(command.get("timer_count", 0)) / 10
        if code in (1, 2):  # permanent state, abort any timed operation
            self._permanent[n] = code == 2
            self._timers.pop(n, None)
        elif code in (3, 4):  # permanent state, let a timed operation finish
            self._permanent[n] = code == 4
        elif code == 5:  # temporary on, then back to the permanent state
            self._timers[n] = now + timer
        elif code == 6:  # temporary off: modelled as the end of any timed on
            self._timers.pop(n, None)

    def is_on(self, output: int) -> bool:
        with self._lock:
            until = self._timers.get(output)
            if until is not None and until > time.monotonic():
                return True
            return self._permanent.get(output, False)

    def outputs_sent(self, output: int | None = None) -> list[dict]:
        with self._lock:
            return [
                c
                for c in self.commands
                if c.get("command") == Command.Output and (output is None or c.get("output_no") == output - 1)
            ]

    def leds(self) -> list[dict]:
        with self._lock:
            return [c for c in self.commands if c.get("command") == Command.LED]

    def buzzes(self) -> list[dict]:
        with self._lock:
            return [c for c in self.commands if c.get("command") == Command.Buzzer]

    # ------------------------------------------------------------------ what a person does at the reader

    def present_card(self, data: bytes, bits: int | None = None) -> None:
        bits = len(data) * 8 if bits is None else bits
        self._event(
            {
                "event": Event.CardRead,
                "reader_no": 0,
                "direction": 0,
                "length": bits,
                "format": CardFormat.Unspecified,
                "data": data,
            }
        )

    def present_wiegand(self, number: int, bits: int = 26) -> None:
        """A Wiegand frame with its parity bits (even over the first half, odd over the second)."""
        body = bits - 2
        value = number & ((1 << body) - 1)
        half = body // 2
        first = bin(value >> (body - half)).count("1") % 2
        second = 1 - bin(value & ((1 << (body - half)) - 1)).count("1") % 2
        frame = (first << (bits - 1)) | (value << 1) | second
        size = (bits + 7) // 8
        self.present_card((frame << (size * 8 - bits)).to_bytes(size, "big"), bits)

    def present_qr(self, text: str) -> None:
        """A QR reader module sends the code's text as raw card data, one byte per character."""
        self.present_card(text.encode())

    def type_pin(self, digits: str, end: str = "#") -> None:
        self._event({"event": Event.KeyPress, "reader_no": 0, "data": (digits + end).encode()})

    def set_input(self, n: int, active: bool) -> None:
        with self._lock:
            self._input_state[n - 1] = 1 if active else 0
            report = bytes(self._input_state)
        self._event({"event": Event.Status, "type": StatusReportType.Input, "report": report})

    def set_tamper(self, active: bool) -> None:
        self._event({"event": Event.Status, "type": StatusReportType.Local, "report": bytes([1 if active else 0, 0])})

    def _event(self, event: dict) -> None:
        self._pd.submit_event(event)

    # ------------------------------------------------------------------ faults

    def silence(self, muted: bool = True) -> None:
        self._channel.muted = muted

    @property
    def online(self) -> bool:
        return bool(self._pd.is_online())

    @property
    def secure(self) -> bool:
        return bool(self._pd.is_sc_active())

    def start(self) -> None:
        self._pd.start()

    def stop(self) -> None:
        if self._pd is not None and self._pd.thread is not None:
            self._pd.stop()


class SimulatedLine:
    """A simulated RS-485 line: ``port`` is what the gateway opens."""

    def __init__(self, pds: Sequence[SimulatedPd]) -> None:
        self.wire = _Wire()
        self.pds = list(pds)
        for pd in self.pds:
            pd.attach(self.wire)

    @property
    def port(self) -> str:
        return self.wire.port

    def pd(self, address: int) -> SimulatedPd:
        return next(p for p in self.pds if p.address == address)

    def start(self) -> SimulatedLine:
        for pd in self.pds:
            pd.start()
        return self

    def noise(self, data: bytes) -> None:
        """Bytes on the wire that no PD sent (a bad cable, a motor starting)."""
        self.wire.write(data)

    def close(self) -> None:
        for pd in self.pds:
            pd.stop()
        self.wire.close()

    def __enter__(self) -> SimulatedLine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _key(spec: str) -> tuple[int, bytes]:
    addr, _, path = spec.partition("=")
    with open(path) as f:
        return int(addr), bytes.fromhex(f.read().strip())


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="bookgate sim osdp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pd", type=int, action="append", default=[], help="a PD at this address (repeat)")
    parser.add_argument(
        "--key-file",
        action="append",
        default=[],
        help="ADDR=PATH: the PD already holds the key in PATH (else it waits in install mode)",
    )
    args = parser.parse_args(list(argv))
    keys = dict(_key(k) for k in args.key_file)
    pds = [SimulatedPd(a, scbk=keys.get(a)) for a in (args.pd or [1])]
    with SimulatedLine(pds) as line:
        print(f"OSDP line on {line.port}: PDs {', '.join(str(p.address) for p in pds)}", flush=True)
        print("commands: card ADDR HEX | wiegand ADDR N | pin ADDR DIGITS | qr ADDR TEXT | input ADDR N 0|1 | state")
        for raw in sys.stdin:
            words = raw.split()
            if not words:
                continue
            if words[0] == "quit":
                break
            try:
                if words[0] == "state":
                    for p in pds:
                        outs = " ".join(f"{n}:{'on' if p.is_on(n) else 'off'}" for n in range(1, p.outputs + 1))
                        print(f"PD {p.address}: online={p.online} secure={p.secure} outputs {outs}", flush=True)
                    continue
                pd = line.pd(int(words[1]))
                if words[0] == "card":
                    pd.present_card(bytes.fromhex(words[2]))
                elif words[0] == "wiegand":
                    pd.present_wiegand(int(words[2]))
                elif words[0] == "pin":
                    pd.type_pin(words[2])
                elif words[0] == "qr":
                    pd.present_qr(" ".join(words[2:]))
                elif words[0] == "input":
                    pd.set_input(int(words[2]), words[3] == "1")
                else:
                    print(f"unknown command {words[0]!r}", flush=True)
            except (IndexError, ValueError, StopIteration) as exc:
                print(f"bad command: {exc}", flush=True)
    return 0
