"""Upstream.spec.proxyProtocol (#20 item 2): each new upstream connection starts with a PROXY
header naming the client whose request opened it (after a PROXY header the gateway read, or
the peer); a connection is reused only by requests whose header would be the same
(test_proxy_protocol_reuse.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.edge._helpers import listener_gateway
from tests.support import resources as r
from tests.support.client import RawClient
from tests.support.gateway import Gateway
from tests.support.net import free_port
from tests.support.proxy_upstream import ProxyProtocolUpstream

PLAIN_PORT = free_port()
REQUEST = b"GET /%s HTTP/1.1\r\nHost: a\r\n\r\n"


@pytest.fixture(scope="module")
def pp_v1() -> Iterator[ProxyProtocolUpstream]:
    upstream = ProxyProtocolUpstream("v1").start()
    yield upstream  # type: ignore[misc]
    upstream.stop()


@pytest.fixture(scope="module")
def pp_v2() -> Iterator[ProxyProtocolUpstream]:
    upstream = ProxyProtocolUpstream("v2").start()
    yield upstream  # type: ignore[misc]
    upstream.stop()


@pytest.fixture(scope="module")
def gw(module_gateways, pp_v1, pp_v2) -> Gateway:
    def config(port: int) -> str:
        gateway = listener_gateway(
            port,
            proxyProtocol={"mode": "required", "trustedSources": ["127.0.0.0/8"]},
            extra_listeners=[{"name": "plain", "port": PLAIN_PORT, "address": "127.0.0.1"}],
        )
        rules = [
            r.rule({"prefix": "/one"}, forward=r.forward("v1")),
            r.rule({"prefix": "/two"}, forward=r.forward("v2")),
        ]
        return r.dump(
            gateway, r.route("all", rules=rules),
            r.upstream("v1", pp_v1.port, proxyProtocol={"version": 1}),
            r.upstream("v2", pp_v2.port, proxyProtocol={"version": 2}),
        )

    return module_gateways(config)


@pytest.fixture
def ups(gw, pp_v1, pp_v2) -> dict[str, ProxyProtocolUpstream]:
    pp_v1.reset()
    pp_v2.reset()
    return {"one": pp_v1, "two": pp_v2}


@pytest.mark.parametrize("path", ["one", "two"])
def test_the_client_from_a_proxy_header_reaches_the_upstream(gw, ups, path: str) -> None:
    with RawClient(gw.port, timeout=5) as conn:
        conn.send(b"PROXY TCP4 203.0.113.7 192.0.2.1 40001 443\r\n" + REQUEST % path.encode())
        assert conn.read_final().status == 200
    up = ups[path]
    up.wait_for_requests(1)
    (header,) = up.headers
    assert header.version == (1 if path == "one" else 2)
    assert header.source == ("203.0.113.7", 40001)
    assert header.destination == ("192.0.2.1", 443)
    assert up.refused == 0


@pytest.mark.parametrize("path", ["one", "two"])
def test_the_peer_is_the_client_without_a_header(gw, ups, path: str) -> None:
    with RawClient(PLAIN_PORT, timeout=5) as conn:
        conn.send(REQUEST % path.encode())
        assert conn.read_final().status == 200
        client_port = conn.local_port
    up = ups[path]
    up.wait_for_requests(1)
    (header,) = up.headers
    assert header.source == ("127.0.0.1", client_port)
    assert header.destination == ("127.0.0.1", PLAIN_PORT)


def test_one_header_per_upstream_connection_reused_by_its_client(gw, ups) -> None:
    with RawClient(PLAIN_PORT, timeout=5) as conn:
        for _ in range(3):
            conn.send(REQUEST % b"two")
            assert conn.read_final().status == 200
    up = ups["two"]
    up.wait_for_requests(3)
    assert up.connections == 1
    assert len(up.headers) == 1
    assert up.refused == 0


def test_active_health_checks_send_a_local_header(module_gateways) -> None:
    """An active HTTP health check to an Upstream that expects a PROXY header sends one that
    names no client (v2 LOCAL), so the endpoint stays healthy and requests still get through."""
    up = ProxyProtocolUpstream("hc").start()
    try:
        def config(port: int) -> str:
            check = {"active": {"type": "http", "path": "/healthz", "interval": "200ms",
                                "timeout": "1s", "unhealthyThreshold": 1}}
            return r.dump(
                r.gateway(port), r.route("all", rules=[r.rule(forward=r.forward("hc"))]),
                r.upstream("hc", up.port, proxyProtocol={"version": 2}, healthCheck=check),
            )

        gw = module_gateways(config)
        probes = up.wait_for_requests(3)
        assert all(q.path == "/healthz" for q in probes[:3])
        assert all(h.command == "local" for h in up.headers[:3])
        assert up.refused == 0
        with RawClient(gw.port, timeout=5) as conn:
            conn.send(REQUEST % b"after-checks")
            assert conn.read_final().status == 200
    finally:
        up.stop()


def test_tls_upstream_gets_the_header_before_the_handshake(module_gateways, pki) -> None:
    """With Upstream tls, the PROXY header goes first in the clear, then TLS (requests and
    active health checks alike)."""
    import ssl

    from tests.support.net import poll_until
    from tests.support.proxy_upstream import ProxyTLSUpstream

    server = pki.issue("pp-up", "pp-up.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(server.cert), str(server.key))
    up = ProxyTLSUpstream(context).start()
    try:
        def config(port: int) -> str:
            check = {"active": {"type": "http", "path": "/healthz", "interval": "200ms",
                                "timeout": "1s", "unhealthyThreshold": 1}}
            tls = {"sni": "pp-up.test", "caFile": str(pki.ca_file)}
            return r.dump(
                r.gateway(port), r.route("all", rules=[r.rule(forward=r.forward("pptls"))]),
                r.upstream("pptls", up.port, proxyProtocol={"version": 1}, tls=tls,
                           healthCheck=check),
            )

        gw = module_gateways(config)
        poll_until(lambda: up.paths.count("/healthz") >= 2, timeout=10)  # checks over TLS
        with RawClient(gw.port, timeout=5) as conn:
            conn.send(REQUEST % b"over-tls")
            assert conn.read_final().status == 200
            client_port = conn.local_port
        poll_until(lambda: "/over-tls" in up.paths, timeout=5)
        sources = [h.source if h is not None else "no header" for h in up.headers]
        assert "no header" not in sources
        assert ("127.0.0.1", client_port) in sources
        assert None in sources  # the health checks' UNKNOWN headers
    finally:
        up.stop()
