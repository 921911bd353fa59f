"""OSDP: card presented -> door output command received by the PD, through the gateway's driver.

Three figures, measured in the same run on the same kind of line (libosdp's own PeripheralDevice on
a pty, the control panel on the other end through pyserial, secure channel up):

- raw command: libosdp's own ControlPanel (its Python layer and refresh thread) submits an output
  command; time until the PD's command callback has it. One way down the line.
- raw reaction: a card read on that same bare ControlPanel, whose event handler submits the output
  at once (no decision, no gateway code); time until the PD has it. One way up, one way down: the
  baseline for the gateway's path.
- gateway: a card read on the example site's garage pedestrian door, driven by the registry's OSDP
  driver, decided by the composition root's decision function over the real decision index
  (10,000 badge holders loaded from a fresh SQLite database); time until the PD has the output.
  Also the gateway's own time per presentation: decision plus building and queuing the reader's
  three commands, measured inside the driver's callback.

    python -m bench.osdp_roundtrip [--n 300]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import threading
import time
import tty
from datetime import timedelta
from pathlib import Path

import serial
from osdp import (  # type: ignore[import-untyped]
    Capability,
    CardFormat,
    Channel,
    Command,
    ControlPanel,
    Event,
    LibFlag,
    LogLevel,
    PDCapabilities,
    PDInfo,
    PeripheralDevice,
)
from sqlmodel import select

from access.decisions import DecisionIndex
from access.models import Controller
from access.windows import set_windows
from bench.access_rig import add_badge_holders
from bench.common import fresh_database
from bms.models import Resource
from bookgate.controllers import online_decider
from bookgate.provision import import_site_file
from config.site import example_path
from core.audit import SYSTEM
from core.db import read_session, utcnow, write_session
from drivers.osdp import driver as osdp_driver
from drivers.osdp.driver import OsdpDriver, PdConfig, Secret, write_key
from drivers.osdp.settings import OsdpSettings
from drivers.osdp.simulator import SimulatedLine, SimulatedPd


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def show(name: str, ms: list[float]) -> None:
    print(f"  {name:<44} n={len(ms):>4}  p50 {statistics.median(ms):7.2f} ms  p99 {pct(ms, 0.99):7.2f} ms")


class _Fd(Channel):
    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def read(self, n: int) -> bytes:
        try:
            return os.read(self.fd, n)
        except BlockingIOError:
            return b""

    def write(self, b: bytes) -> int:
        return os.write(self.fd, b)

    def flush(self) -> None:
        pass


class _Serial(Channel):
    def __init__(self, port: serial.Serial) -> None:
        super().__init__()
        self.port = port

    def read(self, n: int) -> bytes:
        waiting = self.port.in_waiting
        return self.port.read(min(n, waiting)) if waiting else b""

    def write(self, b: bytes) -> int:
        return self.port.write(b)

    def flush(self) -> None:
        self.port.reset_input_buffer()


def raw_libosdp(n: int) -> tuple[list[float], list[float]]:
    """libosdp alone: (command down, card up + command down) in ms."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    os.set_blocking(master, False)
    key = secrets.token_bytes(16)
    got = threading.Event()
    received: list[float] = []

    def on_command(cmd: dict) -> tuple[int, None]:
        if cmd.get("command") == Command.Output:
            received.append(time.perf_counter())
            got.set()
        return 0, None

    caps = PDCapabilities([(Capability.OutputControl, 1, 4), (Capability.LEDControl, 1, 1)])
    pd = PeripheralDevice(
        PDInfo(1, _Fd(master), scbk=key, flags=[LibFlag.EnforceSecure]),
        caps,
        log_level=LogLevel.Emergency,
        command_handler=on_command,
    )
    port = serial.Serial(os.ttyname(slave), 115200, timeout=0)
    output = {"command": Command.Output, "output_no": 0, "control_code": 5, "timer_count": 30}
    cp: ControlPanel | None = None

    def react(_pd: int, event: dict) -> int:
        if event.get("event") == Event.CardRead and cp is not None:
            cp.ctx.submit_command(0, output)  # inside libosdp's refresh: its own lock is held
        return 0

    cp = ControlPanel([PDInfo(1, _Serial(port), scbk=key, flags=[LibFlag.EnforceSecure])], log_level=LogLevel.Emergency)
    pd.start()
    cp.start()
    assert cp.sc_wait(1, timeout=10), "libosdp: no secure channel"
    down, reaction = [], []
    for _ in range(n):
        got.clear()
        t = time.perf_counter()
        cp.submit_command(1, output)
        assert got.wait(5)
        down.append((received[-1] - t) * 1000)
        time.sleep(0.005)
    cp.set_event_handler(react)
    for _ in range(n):
        got.clear()
        t = time.perf_counter()
        pd.submit_event(
            {
                "event": Event.CardRead,
                "reader_no": 0,
                "direction": 0,
                "length": 32,
                "format": 0,
                "data": b"\x01\x02\x03\x04",
            }
        )
        assert got.wait(5)
        reaction.append((received[-1] - t) * 1000)
        time.sleep(0.005)
    cp.teardown()
    pd.teardown()
    port.close()
    os.close(master)
    os.close(slave)
    _ = CardFormat  # the raw read above is CardFormat.Unspecified (0)
    return down, reaction


def gateway(n: int, workdir: Path) -> tuple[list[float], list[float]]:
    """The registry's driver and the real decision index: (card to output, gateway's own time) in ms."""
    with fresh_database("sqlite", workdir) as (_url, engine):
        import_site_file(engine, example_path(), SYSTEM)
        holders = add_badge_holders(engine, 10_000)
        user_id, _cred, badge = holders[4242]
        now = utcnow()
        with write_session(engine) as s:
            parking = s.exec(select(Resource).where(Resource.key == "visitor-parking")).one()
            set_windows(
                s,
                "visit",
                1,
                parking.id,
                [user_id],
                now - timedelta(hours=1),
                now + timedelta(hours=4),
                "badge",
                active=True,
            )
            door_ctl = s.exec(select(Controller).where(Controller.key == "garage-door-ctl")).one()
            example = OsdpSettings.model_validate(door_ctl.settings)
        index = DecisionIndex()
        with read_session(engine) as s:
            index.load(s)
        key = secrets.token_bytes(16)
        key_file = workdir / "garage-door.key"
        write_key(str(key_file), Secret(key))
        line = SimulatedLine([SimulatedPd(example.address, scbk=key)]).start()
        settings = example.model_copy(update={"port": line.port, "scbk_file": str(key_file)})
        driver = OsdpDriver([PdConfig("garage-door-ctl", settings)], online_decider(index))
        own: list[float] = []
        present = osdp_driver.Line._present

        def timed(self, pd, kind, value, spellings):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            present(self, pd, kind, value, spellings)
            own.append((time.perf_counter() - t) * 1000)

        osdp_driver.Line._present = timed  # type: ignore[method-assign]
        driver.start()
        try:
            deadline = time.monotonic() + 15
            while driver.state("garage-door-ctl")[0] != "online":
                assert time.monotonic() < deadline, "the gateway's OSDP line did not come up"
                time.sleep(0.05)
            pd = line.pd(example.address)
            card = bytes.fromhex(badge)
            latency: list[float] = []
            lost = 0
            while len(latency) < n:
                before = len(pd.outputs_sent(1))
                t = time.monotonic()
                pd.present_card(card)
                deadline = time.monotonic() + 3
                while len(pd.outputs_sent(1)) == before and time.monotonic() < deadline:
                    time.sleep(0.0005)
                if len(pd.outputs_sent(1)) == before:  # the PD dropped off the line meanwhile: shown again
                    lost += 1
                    assert lost <= n // 10, f"{lost} presentations lost"
                    while driver.state("garage-door-ctl")[0] != "online":
                        time.sleep(0.05)
                    continue
                at = next(at for at, c in reversed(pd.received_at) if c.get("command") == Command.Output)
                latency.append((at - t) * 1000)
                time.sleep(0.005)
            print(f"  gateway: {lost} presentation(s) lost while the PD was off the line")
        finally:
            osdp_driver.Line._present = present  # type: ignore[method-assign]
            driver.stop()
            line.close()
        return latency, own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    print(f"OSDP round trips over a pty, secure channel up, {args.n} each")
    down, reaction = raw_libosdp(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        latency, own = gateway(args.n, Path(tmp))
    show("libosdp raw command (CP -> PD)", down)
    show("libosdp raw reaction (card -> output at PD)", reaction)
    show("gateway: card -> output at PD", latency)
    show("gateway's own time per presentation", own)
    print(
        f"  gateway / raw reaction: p50 {statistics.median(latency) / statistics.median(reaction):.2f}x, "
        f"p99 {pct(latency, 0.99) / pct(reaction, 0.99):.2f}x"
    )


if __name__ == "__main__":
    main()
