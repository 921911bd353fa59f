"""`bookgate serve --workers N` shares one listening socket between its workers: connections
accepted on it must have TCP_NODELAY, or each keep-alive response after the first waits for the
client's delayed ACK (about 40 ms on Linux)."""

from __future__ import annotations

import asyncio
import socket

from bookgate.workers import TcpConfig


def test_connections_on_the_workers_socket_get_tcp_nodelay():
    config = TcpConfig("bookgate.workers:worker_app", factory=True, host="127.0.0.1", port=0, workers=2)
    listener = config.bind_socket()
    assert listener.proto == socket.IPPROTO_TCP

    async def accept_one() -> int:
        loop = asyncio.get_running_loop()
        seen: asyncio.Future[int] = loop.create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await loop.create_server(Probe, sock=listener)
        try:
            _reader, writer = await asyncio.open_connection(*listener.getsockname()[:2])
            value = await asyncio.wait_for(seen, 5)
            writer.close()
            return value
        finally:
            server.close()

    assert asyncio.run(accept_one()) != 0
