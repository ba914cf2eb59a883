"""PROXY protocol in front of HTTP/2 (#20 item 1: "works with HTTPS listeners and HTTP/2"):
a PROXY header, then the h2c preface; the header's client is the client of every stream (the
upstream's X-Forwarded-For, ipFilter)."""

from __future__ import annotations

import socket
import ssl

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ResponseReceived, StreamEnded

from tests.integration.edge._helpers import forward_all, listener_gateway
from tests.integration.edge.test_proxy_protocol import v2
from tests.support import resources as r
from tests.support.gateway import Gateway
from tests.support.upstream import ScriptedUpstream


@pytest.fixture(scope="module")
def gw(module_gateways, module_upstreams) -> Gateway:
    up = module_upstreams("pp-h2")

    def config(port: int) -> str:
        doc = listener_gateway(port, proxyProtocol={"mode": "required",
                                                    "trustedSources": ["127.0.0.0/8"]})
        doc["spec"]["policies"] = [{"ipFilter": {"deny": ["198.51.100.0/24"]}}]
        return r.dump(doc, *forward_all("pp-h2", up.port))
    gateway = module_gateways(config)
    gateway.upstream = up
    return gateway


def h2_get(port: int, proxy_header: bytes, streams: int = 2,
           tls: ssl.SSLContext | None = None, authority: bytes = b"a") -> list[int]:
    """The statuses of ``streams`` GETs on one connection that starts with
    ``proxy_header`` (then, with ``tls``, a TLS handshake offering ALPN h2)."""
    conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    scheme = b"https" if tls is not None else b"http"
    for i in range(streams):
        conn.send_headers(1 + 2 * i, [(b":method", b"GET"), (b":scheme", scheme),
                                      (b":authority", authority), (b":path", b"/pp")],
                          end_stream=True)
    statuses: dict[int, int] = {}
    ended: set[int] = set()
    plain = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock: socket.socket = plain
    if tls is not None:
        plain.sendall(proxy_header)
        tls.set_alpn_protocols(["h2"])
        sock = tls.wrap_socket(plain, server_hostname=authority.decode())
        assert sock.selected_alpn_protocol() == "h2"
        sock.sendall(conn.data_to_send())
    else:
        sock.sendall(proxy_header + conn.data_to_send())
    with sock:
        while len(ended) < streams:
            data = sock.recv(65536)
            assert data, "closed"
            for event in conn.receive_data(data):
                if isinstance(event, ResponseReceived):
                    statuses[event.stream_id] = int(dict(event.headers)[b":status"])
                elif isinstance(event, StreamEnded):
                    ended.add(event.stream_id)
            sock.sendall(conn.data_to_send())
    return [statuses[1 + 2 * i] for i in range(streams)]


def test_proxy_header_client_is_every_streams_client(gw: Gateway) -> None:
    upstream: ScriptedUpstream = gw.upstream
    upstream.reset()
    assert h2_get(gw.port, v2("203.0.113.7")) == [200, 200]
    assert [req.head.get("x-forwarded-for") for req in upstream.requests] == [
        "203.0.113.7", "203.0.113.7"]


def test_ip_filter_sees_the_proxy_header_client_over_h2(gw: Gateway) -> None:
    assert h2_get(gw.port, v2("198.51.100.9")) == [403, 403]
