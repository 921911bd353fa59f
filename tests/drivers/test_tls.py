"""mqtts:// with a CA file, against a Mosquitto TLS listener started for this test."""

from __future__ import annotations

import asyncio
import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from access.protocol import Grant
from drivers.esprfid import ControllerConfig, EsprfidDriver, MqttSettings
from drivers.esprfid.simulator import DeviceConfig, SimulatorFleet
from tests.drivers.helpers import FAST_RETRY, MOSQUITTO

OPENSSL = shutil.which("openssl")


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)


def _make_pki(d: Path) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1."""
    assert OPENSSL
    _run(OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=bookgate test CA",
         "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    _run(OPENSSL, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", "server.key", "-out", "server.csr", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _run(OPENSSL, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-days", "2", "-extfile", "san.ext", "-out", "server.pem", cwd=d)  # fmt: skip


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    if not OPENSSL or not Path(MOSQUITTO).exists():
        pytest.skip("needs openssl and mosquitto")
    d = tmp_path_factory.mktemp("tls")
    _make_pki(d)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (d / "mosquitto.conf").write_text(
        # as root, mosquitto would switch to its own user, who cannot read our private temp dir
        f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
        f"cafile {d / 'ca.pem'}\ncertfile {d / 'server.pem'}\nkeyfile {d / 'server.key'}\n"
    )
    proc = subprocess.Popen([MOSQUITTO, "-c", str(d / "mosquitto.conf")], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("mosquitto TLS listener did not start")
                time.sleep(0.05)
        yield f"mqtts://127.0.0.1:{port}", str(d / "ca.pem")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_grant_over_tls_with_ca_file(tls_broker: tuple[str, str]):
    url, ca_file = tls_broker
    settings = MqttSettings.from_url(url, ca_file=ca_file)
    device = DeviceConfig("tls/door", "198.18.4.1", "esp-tls")
    fleet = SimulatorFleet(settings, [device], mode="solo")
    driver = EsprfidDriver(settings, [ControllerConfig("esp-tls", "tls/door", "198.18.4.1")], retry=FAST_RETRY)
    loop = asyncio.new_event_loop()
    try:
        driver.start()
        assert loop.run_until_complete(driver.wait_connected(10))
        fleet.start()
        assert fleet.wait_ready(10)
        now = datetime.now(UTC)
        result = loop.run_until_complete(
            driver.send("esp-tls", Grant("g", 1, "77", "T", now, now + timedelta(hours=1)))
        )
        assert result.ok, result
        assert fleet["tls/door"].present("77") == "Always"
    finally:
        driver.stop()
        fleet.stop()
        loop.close()


def test_tls_refuses_a_server_the_ca_file_does_not_vouch_for(tls_broker: tuple[str, str]):
    url, _ = tls_broker
    driver = EsprfidDriver(MqttSettings.from_url(url))  # system CAs only: the test CA is unknown
    loop = asyncio.new_event_loop()
    try:
        driver.start()
        assert not loop.run_until_complete(driver.wait_connected(1.0))
    finally:
        driver.stop()
        loop.close()
