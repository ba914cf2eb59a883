"""PROXY protocol on HTTPS listeners: the header precedes the TLS handshake (read by the
acceptor with MSG_PEEK, so the ClientHello is left for TLS)."""

from __future__ import annotations

import ssl
import time

import pytest

from tests.integration.edge._helpers import https, listener_gateway
from tests.integration.edge.test_proxy_protocol import refusals, v1, v2
from tests.integration.edge.test_proxy_protocol_http2 import h2_get
from tests.support import resources as r
from tests.support.client import RawClient
from tests.support.gateway import Gateway
from tests.support.net import free_port, poll_until
from tests.support.recording import RecordingUpstream
from tests.support.tls import CertFiles, Pki

OPTIONAL_TLS_PORT = free_port()
REQUEST = b"GET /x HTTP/1.1\r\nHost: pp.test\r\n\r\n"


@pytest.fixture(scope="module")
def cert(pki: Pki) -> CertFiles:
    return pki.issue("pp", "pp.test")


@pytest.fixture(scope="module")
def gw(module_gateways, cert, recorder: RecordingUpstream) -> Gateway:
    trusted = ["127.0.0.0/8"]

    def config(port: int) -> str:
        gateway = listener_gateway(
            port, **https(cert),
            proxyProtocol={"mode": "required", "trustedSources": trusted},
            limits={"headerReadTimeout": "1s"},
            extra_listeners=[{"name": "opt", "port": OPTIONAL_TLS_PORT, "address": "127.0.0.1",
                              **https(cert),
                              "proxyProtocol": {"mode": "optional", "trustedSources": trusted}}],
        )
        return r.dump(gateway, r.route("all", rules=[r.rule(forward=r.forward("rec"))]),
                      r.upstream("rec", recorder.port))

    return module_gateways(config)


@pytest.fixture
def up(gw: Gateway, recorder: RecordingUpstream) -> RecordingUpstream:
    recorder.reset()
    return recorder


def tls_request(pki: Pki, port: int, pieces: list[bytes]) -> int:
    ctx = pki.client_context()
    ctx.check_hostname = False
    with RawClient(port, timeout=5) as client:
        for piece in pieces:
            client.sock.sendall(piece)
            time.sleep(0.05)
        client.sock = ctx.wrap_socket(client.sock, server_hostname="pp.test",
                                      do_handshake_on_connect=False)
        client.sock.do_handshake()  # after the assignment: a failure closes the TLS socket
        client.send(REQUEST)
        return client.read_final().status


@pytest.mark.parametrize(("pieces", "client"), [
    pytest.param([v1("203.0.113.21")], "203.0.113.21", id="v1"),
    pytest.param([v2("2001:db8::21")], "2001:db8::21", id="v2"),
    pytest.param([v2("203.0.113.22")[:10], v2("203.0.113.22")[10:]], "203.0.113.22",
                 id="v2-in-two-pieces"),
])
def test_https_header_names_the_client(gw, up, pki, pieces, client: str) -> None:
    assert tls_request(pki, gw.port, pieces) == 200
    assert up.last.header("x-forwarded-for") == client


def test_https_required_without_header_is_closed(gw, up, pki) -> None:
    before = refusals(gw, gw.port, "missing")
    with pytest.raises((ssl.SSLError, OSError)):
        tls_request(pki, gw.port, [])
    assert up.requests == []
    assert poll_until(lambda: refusals(gw, gw.port, "missing") == before + 1, timeout=5)


def test_https_malformed_header_is_closed(gw, up, pki) -> None:
    before = refusals(gw, gw.port, "malformed")
    with RawClient(gw.port, timeout=5) as client:  # the refusal comes before any TLS
        client.send(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n\x16\x03\x01")
        assert client.closed_by_peer(4)
    assert poll_until(lambda: refusals(gw, gw.port, "malformed") == before + 1, timeout=5)


def test_https_header_timeout(gw, up) -> None:
    before = refusals(gw, gw.port, "timeout")
    with RawClient(gw.port, timeout=6) as client:
        client.send(v2("203.0.113.7")[:20])
        assert client.closed_by_peer(5)
    assert poll_until(lambda: refusals(gw, gw.port, "timeout") == before + 1, timeout=5)


def test_https_optional_takes_both(gw, up, pki) -> None:
    assert tls_request(pki, OPTIONAL_TLS_PORT, []) == 200
    assert up.last.header("x-forwarded-for") == "127.0.0.1"
    assert tls_request(pki, OPTIONAL_TLS_PORT, [v1("203.0.113.23")]) == 200
    assert up.last.header("x-forwarded-for") == "203.0.113.23"


def test_https_header_then_h2_names_every_streams_client(gw, up, pki) -> None:
    """The header before the ClientHello, then ALPN h2: each stream's client is the header's
    (docs/edge.md: the reader works in front of h2 over TLS as of HTTP/1.1)."""
    ctx = pki.client_context()
    ctx.check_hostname = False
    assert h2_get(gw.port, v2("203.0.113.31"), tls=ctx, authority=b"pp.test") == [200, 200]
    assert [q.header("x-forwarded-for") for q in up.requests] == ["203.0.113.31"] * 2
