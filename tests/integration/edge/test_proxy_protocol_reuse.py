"""Reuse of upstream connections that start with a PROXY header (Upstream.proxyProtocol, #20):
a pooled connection serves only requests whose header would be the same (client address and
port, address reached), so one keep-alive client's requests share one upstream connection and
no client's request ever travels on a connection whose header named another client. Idle such
connections stay within ``maxIdlePerEndpoint``; a full pool makes room from another client's
idle connection instead of leaving a client waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.integration.edge._helpers import listener_gateway
from tests.support import resources as r
from tests.support.client import RawClient
from tests.support.gateway import Gateway
from tests.support.h1 import Response
from tests.support.net import free_port, poll_until
from tests.support.proxy_upstream import ProxyProtocolUpstream
from tests.support.upstream import RecordedRequest, Reply, echo_reply

PP_PORT = free_port()  # a listener reading a PROXY header itself (a balancer in front)
PP_TRUSTED = ["127.0.0.0/8"]


class NamingUpstream(ProxyProtocolUpstream):
    """Answers each request with ``x-proxy-source: IP:PORT``, the client its connection's
    PROXY header named, so a test sees which header carried which request."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.named: dict[int, str] = {}  # connection id -> the header's source

    async def _read_request(  # type: ignore[override]
        self, reader: asyncio.StreamReader, conn_id: int
    ) -> RecordedRequest | None:
        # runs on from ProxyProtocolUpstream._serve without a pause, so the newest header is
        # this connection's
        if conn_id not in self.named:
            source = self.headers[-1].source
            self.named[conn_id] = f"{source[0]}:{source[1]}" if source else "none"
        return await super()._read_request(reader, conn_id)

    def echo(self, request: RecordedRequest) -> Reply:
        reply = echo_reply(request, self.name)
        reply.headers.append(("x-proxy-source", self.named[request.conn_id]))
        reply.headers.append(("x-upstream-conn", str(request.conn_id)))
        return reply

    @property
    def open_connections(self) -> int:
        return len(self._tasks)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, NamingUpstream]]:
    started = {name: NamingUpstream(name) for name in ("plain", "bounded", "single")}
    for upstream in started.values():
        upstream.start()
    yield started
    for upstream in started.values():
        upstream.stop()


@pytest.fixture(scope="module")
def gw(module_gateways, upstreams: dict[str, NamingUpstream]) -> Gateway:
    def config(port: int) -> str:
        gateway = listener_gateway(port, extra_listeners=[
            {"name": "behind-balancer", "port": PP_PORT, "address": "127.0.0.1",
             "proxyProtocol": {"mode": "required", "trustedSources": PP_TRUSTED}},
        ])
        rules = [r.rule({"prefix": f"/{name}"}, forward=r.forward(name)) for name in upstreams]
        pools = {"bounded": {"maxIdlePerEndpoint": 2},
                 "single": {"maxConnectionsPerEndpoint": 1}}
        docs = [r.upstream(name, up.port, proxyProtocol={"version": 2},
                           **({"connectionPool": pools[name]} if name in pools else {}))
                for name, up in upstreams.items()]
        return r.dump(gateway, r.route("all", rules=rules), *docs)

    return module_gateways(config)


@pytest.fixture
def ups(gw: Gateway, upstreams: dict[str, NamingUpstream]) -> dict[str, NamingUpstream]:
    for upstream in upstreams.values():
        upstream.reset()
    return upstreams


def get(conn: RawClient, path: str, prefix: bytes = b"") -> Response:
    conn.send(prefix + f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    response = conn.read_final()
    assert response.status == 200, response
    return response


def source(response: Response) -> str | None:
    return response.header("x-proxy-source")


def test_a_keep_alive_client_reuses_one_upstream_connection(gw, ups) -> None:
    with RawClient(gw.port, timeout=5) as conn:
        first = get(conn, "/plain/1")
        second = get(conn, "/plain/2")
        third = get(conn, "/plain/3")
        me = f"127.0.0.1:{conn.local_port}"
    assert source(first) == source(second) == source(third) == me
    up = ups["plain"]
    assert up.connections == 1
    assert len(up.headers) == 1  # one header, at the start of the one connection
    assert up.refused == 0


def test_another_client_never_gets_a_connection_naming_the_first(gw, ups) -> None:
    with RawClient(gw.port, timeout=5) as a, RawClient(gw.port, timeout=5) as b:
        me = {id(a): f"127.0.0.1:{a.local_port}", id(b): f"127.0.0.1:{b.local_port}"}
        for client in (a, b, a, b, b, a):
            assert source(get(client, "/plain/x")) == me[id(client)]
    up = ups["plain"]
    assert up.connections == 2  # one per client, each reused
    assert sorted(f"{h.source[0]}:{h.source[1]}" for h in up.headers if h.source) == sorted(
        me.values())


def test_the_same_header_from_a_balancer_shares_a_connection(gw, ups) -> None:
    """Two balancer connections naming the same client (address and port) would send the
    same header upstream, so they may share a pooled connection; another port may not."""
    same = b"PROXY TCP4 203.0.113.7 192.0.2.1 40001 443\r\n"
    other = b"PROXY TCP4 203.0.113.7 192.0.2.1 40002 443\r\n"
    for header in (same, same, other):
        with RawClient(PP_PORT, timeout=5) as conn:
            response = get(conn, "/plain/b", prefix=header)
            port = header.split()[4].decode()
            assert source(response) == f"203.0.113.7:{port}"
    assert ups["plain"].connections == 2


def test_idle_connections_stay_within_max_idle(gw, ups) -> None:
    up = ups["bounded"]
    clients = [RawClient(gw.port, timeout=5) for _ in range(4)]
    try:
        for client in clients:
            get(client, "/bounded/one")
        assert up.connections == 4
        # maxIdlePerEndpoint 2: the two oldest idle connections were closed
        poll_until(lambda: up.open_connections <= 2, timeout=5,
                   message="at most 2 idle upstream connections")
        newest, oldest = clients[-1], clients[0]
        assert source(get(newest, "/bounded/two")) == f"127.0.0.1:{newest.local_port}"
        assert up.connections == 4  # reused
        assert source(get(oldest, "/bounded/two")) == f"127.0.0.1:{oldest.local_port}"
        assert up.connections == 5  # its idle connection was gone: a new one, its own header
    finally:
        for client in clients:
            client.close()


def test_a_full_pool_makes_room_from_another_clients_idle_connection(gw, ups) -> None:
    """maxConnectionsPerEndpoint 1: B's request closes A's idle connection and opens its own
    instead of waiting for A's to time out."""
    up = ups["single"]
    with RawClient(gw.port, timeout=5) as a, RawClient(gw.port, timeout=5) as b:
        assert source(get(a, "/single/1")) == f"127.0.0.1:{a.local_port}"
        assert source(get(b, "/single/2")) == f"127.0.0.1:{b.local_port}"
        assert source(get(b, "/single/3")) == f"127.0.0.1:{b.local_port}"
        assert source(get(a, "/single/4")) == f"127.0.0.1:{a.local_port}"
    assert up.connections == 3
    poll_until(lambda: up.open_connections <= 1, timeout=5, message="one connection at most")
