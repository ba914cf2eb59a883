"""WebSocket through the gateway with the ``websockets`` library on both sides: text, binary,
16 MiB, fragmentation, ping/pong, close codes; a refused upgrade keeps HTTP parsing on; idle
tunnels are cut by ``streamIdleTimeout``; tunnels are counted as ``1xx`` in /metrics.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed as WSClosed
from websockets.sync.client import ClientConnection, connect

from tests.integration.edge._helpers import listener_gateway
from tests.support import resources as r
from tests.support.client import RawClient
from tests.support.gateway import Gateway, metric_value
from tests.support.net import poll_until
from tests.support.upstream import ScriptedUpstream

MiB = 1024 * 1024
IDLE = 2  # seconds: the listener's streamIdleTimeout


class EchoServer:
    """A websockets server on its own loop: echoes every message; ``close:<code>`` closes with
    that code and reason ``bye``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.request_headers: list[dict[str, str]] = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server = None

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.request_headers.append({k.lower(): v for k, v in ws.request.headers.raw_items()})
        async for message in ws:
            if isinstance(message, str) and message.startswith("close:"):
                await ws.close(int(message[6:]), "bye")
                return
            await ws.send(message)

    async def _start(self) -> None:
        self._server = await serve(self._handler, "127.0.0.1", 0, max_size=None,
                                   ping_interval=None)
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> EchoServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
                await asyncio.wait_for(self._server.wait_closed(), 5)

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain(module_upstreams) -> ScriptedUpstream:
    return module_upstreams("plain")


@pytest.fixture(scope="module")
def gw(module_gateways, echo: EchoServer, plain: ScriptedUpstream) -> Gateway:
    return module_gateways(lambda port: r.dump(
        listener_gateway(port, limits={"streamIdleTimeout": f"{IDLE}s"}),
        r.route("ws", rules=[
            r.rule({"prefix": "/plain"}, name="plain", forward=r.forward("plain")),
            r.rule(name="echo", forward=r.forward("echo")),
        ]),
        r.upstream("echo", echo.port),
        r.upstream("plain", plain.port),
    ))


def ws_connect(gw: Gateway, path: str = "/chat") -> ClientConnection:
    return connect(f"ws://127.0.0.1:{gw.port}{path}", max_size=None, ping_interval=None,
                   open_timeout=5, close_timeout=5)


@pytest.mark.parametrize("message", [
    pytest.param("hello, tunnel", id="text"),
    pytest.param(bytes(range(256)) * 4, id="binary"),
    pytest.param(bytes(range(256)) * (16 * MiB // 256), id="binary-16MiB"),
])
def test_messages_echoed_through_the_tunnel(gw, message) -> None:
    with ws_connect(gw) as ws:
        ws.send(message)
        assert ws.recv(timeout=20) == message


def test_fragmented_message_is_reassembled(gw) -> None:
    with ws_connect(gw) as ws:
        ws.send(["frag", "ment", "ed"])
        assert ws.recv(timeout=5) == "fragmented"
        ws.send([b"\x00\x01", b"\x02"])
        assert ws.recv(timeout=5) == b"\x00\x01\x02"


def test_ping_gets_pong(gw) -> None:
    with ws_connect(gw) as ws:
        pong = ws.ping(b"are-you-there")
        assert pong.wait(5), "no pong through the tunnel"


def test_close_code_passed_through(gw) -> None:
    with ws_connect(gw) as ws:
        ws.send("close:4001")
        with pytest.raises(WSClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye")


def test_upgrade_headers_reach_the_upstream(gw, echo) -> None:
    with ws_connect(gw, "/headers") as ws:
        ws.send("x")
        ws.recv(timeout=5)
    headers = echo.request_headers[-1]
    assert headers["upgrade"].lower() == "websocket"
    assert "upgrade" in headers["connection"].lower()


def test_refused_upgrade_keeps_the_connection_for_http(gw, plain) -> None:
    plain.reset()
    upgrade = [("Connection", "Upgrade"), ("Upgrade", "websocket"),
               ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]
    with RawClient(gw.port, timeout=5) as client:
        client.request("GET", "/plain/ws", upgrade)
        refused = client.read_final()
        assert refused.status == 200, refused
        client.request("GET", "/plain/after")
        after = client.read_final()
        assert after.status == 200, after
    assert [q.target for q in plain.requests] == ["/plain/ws", "/plain/after"]


def test_idle_tunnel_closed_after_stream_idle_timeout(gw) -> None:
    with ws_connect(gw) as ws:
        ws.send("warm")
        assert ws.recv(timeout=5) == "warm"
        started = time.monotonic()
        with pytest.raises(WSClosed):
            ws.recv(timeout=IDLE + 5)
        elapsed = time.monotonic() - started
    assert IDLE - 0.5 < elapsed < IDLE + 4, elapsed


def test_tunnels_counted_as_1xx_for_their_route(gw) -> None:
    def tunnels() -> float:
        return metric_value(gw.metrics(), "propylon_requests_total", code="1xx",
                            route="default/ws", rule="echo")

    before = tunnels()
    with ws_connect(gw) as ws:
        ws.send("count me")
        ws.recv(timeout=5)
    poll_until(lambda: tunnels() >= before + 1, 5, message="tunnel counted as 1xx")
