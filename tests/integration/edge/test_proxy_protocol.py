"""PROXY protocol on HTTP listeners (#20 item 1): a header's source address becomes the client
address (X-Forwarded-For upstream, ipFilter); missing, malformed, untrusted or late headers
close the connection and are counted in /metrics; the optional mode takes both."""

from __future__ import annotations

import ipaddress
import struct
import time

import pytest

from tests.integration.edge._helpers import listener_gateway
from tests.support import resources as r
from tests.support.client import RawClient
from tests.support.gateway import Gateway, metric_value
from tests.support.net import free_port, poll_until
from tests.support.recording import RecordingUpstream

OPTIONAL_PORT = free_port()
UNTRUSTED_PORT = free_port()
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
LOCAL = ["127.0.0.0/8"]


def v1(src: str, sport: int = 40000) -> bytes:
    proto = "TCP6" if ":" in src else "TCP4"
    dst = "::1" if ":" in src else "127.0.0.1"
    return f"PROXY {proto} {src} {dst} {sport} 80\r\n".encode()


def v2(src: str, sport: int = 40000, tlvs: bytes = b"") -> bytes:
    address = ipaddress.ip_address(src)
    dst = ipaddress.ip_address("127.0.0.1" if address.version == 4 else "::1")
    family = 0x11 if address.version == 4 else 0x21
    body = address.packed + dst.packed + struct.pack("!HH", sport, 80) + tlvs
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


REQUEST = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"


@pytest.fixture(scope="module")
def gw(module_gateways, recorder: RecordingUpstream) -> Gateway:
    def config(port: int) -> str:
        gateway = listener_gateway(
            port,
            limits={"headerReadTimeout": "1s"},
            proxyProtocol={"mode": "required", "trustedSources": LOCAL},
            extra_listeners=[
                {"name": "opt", "port": OPTIONAL_PORT, "address": "127.0.0.1",
                 "proxyProtocol": {"mode": "optional", "versions": [1, 2],
                                   "trustedSources": LOCAL}},
                {"name": "far", "port": UNTRUSTED_PORT, "address": "127.0.0.1",
                 "proxyProtocol": {"mode": "required", "trustedSources": ["10.0.0.0/8"]}},
            ],
        )
        gateway["spec"]["policies"] = [{"ipFilter": {"deny": ["198.51.100.0/24"]}}]
        rules = [
            r.rule({"prefix": "/internal"}, forward=r.forward("rec"),
                   policies=[{"ipFilter": {"allow": ["192.0.2.0/24"]}}]),
            r.rule(forward=r.forward("rec")),
        ]
        return r.dump(gateway, r.route("all", rules=rules), r.upstream("rec", recorder.port))

    return module_gateways(config)


@pytest.fixture
def up(gw: Gateway, recorder: RecordingUpstream) -> RecordingUpstream:
    recorder.reset()
    return recorder


def send(port: int, data: bytes, *, target: bytes = b"/x") -> int:
    with RawClient(port, timeout=5) as client:
        client.send(data + REQUEST.replace(b"/x", target))
        return client.read_final().status


@pytest.mark.parametrize(("header", "client"), [
    pytest.param(v1("203.0.113.7"), "203.0.113.7", id="v1-tcp4"),
    pytest.param(v1("2001:db8::7"), "2001:db8::7", id="v1-tcp6"),
    pytest.param(v2("203.0.113.8", tlvs=b"\xea\x00\x05\x01vpce"), "203.0.113.8", id="v2-inet"),
    pytest.param(v2("2001:db8::8"), "2001:db8::8", id="v2-inet6"),
])
def test_the_header_names_the_client_upstream(gw, up, header: bytes, client: str) -> None:
    assert send(gw.port, header) == 200
    assert up.last.header("x-forwarded-for") == client


def test_header_and_request_in_pieces(gw, up) -> None:
    data = v2("203.0.113.9") + REQUEST
    with RawClient(gw.port, timeout=5) as conn:
        for offset in range(0, len(data), 5):
            conn.send(data[offset:offset + 5])
        assert conn.read_final().status == 200
    assert up.last.header("x-forwarded-for") == "203.0.113.9"


def test_keep_alive_keeps_the_client_address(gw, up) -> None:
    with RawClient(gw.port, timeout=5) as conn:
        conn.send(v1("203.0.113.10") + REQUEST)
        assert conn.read_final().status == 200
        conn.send(REQUEST)
        assert conn.read_final().status == 200
    assert [q.header("x-forwarded-for") for q in up.requests] == ["203.0.113.10"] * 2


@pytest.mark.parametrize(("header", "target", "status"), [
    pytest.param(v1("192.0.2.9"), b"/internal", 200, id="route-allow-matches-header-source"),
    pytest.param(v2("192.0.2.9"), b"/internal", 200, id="route-allow-v2"),
    pytest.param(v1("203.0.113.7"), b"/internal", 403, id="route-allow-other-source"),
    pytest.param(v1("198.51.100.5"), b"/x", 403, id="gateway-deny-v1"),
    pytest.param(v2("198.51.100.5"), b"/x", 403, id="gateway-deny-v2"),
])
def test_ip_filter_sees_the_header_source(gw, up, header, target, status) -> None:
    assert send(gw.port, header, target=target) == status


def refused(port: int, data: bytes) -> bool:
    """The gateway closes the connection without a byte of answer."""
    with RawClient(port, timeout=5) as conn:
        conn.send(data)
        return conn.read_to_eof(time.monotonic() + 4) == b""


def refusals(gw: Gateway, port: int, reason: str) -> float:
    return metric_value(gw.metrics(), "propylon_proxy_protocol_refused_total",
                        listener=f"127.0.0.1:{port}", reason=reason)


def test_required_without_header_is_closed_and_counted(gw, up) -> None:
    before = refusals(gw, gw.port, "missing")
    assert refused(gw.port, REQUEST)
    assert up.requests == []
    assert poll_until(lambda: refusals(gw, gw.port, "missing") == before + 1, timeout=5)


@pytest.mark.parametrize("data", [
    pytest.param(b"PROXY TCP4 1.2.3.999 127.0.0.1 1 2\r\n", id="v1-bad-address"),
    pytest.param(b"PROXY TCP4 1.2.3.4 127.0.0.1 99999 2\r\n", id="v1-bad-port"),
    pytest.param(b"PROXY TCP4 " + b"1" * 120, id="v1-too-long"),
    pytest.param(V2_SIGNATURE[:-1] + b"X" + bytes(4), id="v2-wrong-signature"),
    pytest.param(V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12), id="v2-wrong-version"),
    pytest.param(V2_SIGNATURE + b"\x21\x11\xff\xff", id="v2-oversized"),
    pytest.param(v2("203.0.113.7", tlvs=b"\xea\x00\x40\x01"), id="v2-tlv-overrun"),
])
def test_malformed_headers_are_closed_and_counted(gw, up, data: bytes) -> None:
    before = refusals(gw, gw.port, "malformed")
    assert refused(gw.port, data + REQUEST)
    assert up.requests == []
    assert poll_until(lambda: refusals(gw, gw.port, "malformed") == before + 1, timeout=5)


def test_a_truncated_header_times_out(gw, up) -> None:
    before = refusals(gw, gw.port, "timeout")
    with RawClient(gw.port, timeout=6) as conn:
        conn.send(v2("203.0.113.7")[:20])
        assert conn.closed_by_peer(5)
    assert poll_until(lambda: refusals(gw, gw.port, "timeout") == before + 1, timeout=5)


def test_untrusted_peer_is_closed(gw, up) -> None:
    before = refusals(gw, UNTRUSTED_PORT, "untrusted")
    assert refused(UNTRUSTED_PORT, v1("203.0.113.7") + REQUEST)
    assert up.requests == []
    assert poll_until(
        lambda: refusals(gw, UNTRUSTED_PORT, "untrusted") == before + 1, timeout=5)


def test_optional_takes_both(gw, up) -> None:
    assert send(OPTIONAL_PORT, b"") == 200
    assert up.last.header("x-forwarded-for") == "127.0.0.1"
    assert send(OPTIONAL_PORT, v1("203.0.113.11")) == 200
    assert up.last.header("x-forwarded-for") == "203.0.113.11"
    assert send(OPTIONAL_PORT, v2("203.0.113.12")) == 200
    assert up.last.header("x-forwarded-for") == "203.0.113.12"


def test_the_access_log_has_the_header_source(gw, up) -> None:
    assert send(gw.port, v1("203.0.113.13")) == 200
    entry = poll_until(lambda: next(
        (e for e in gw.access_log() if e.get("client") == "203.0.113.13"), None), timeout=5)
    assert entry["proxy"] == {"balancer": "127.0.0.1"}


def test_the_access_log_keeps_tlvs(gw, up) -> None:
    tls = (b"\x20\x00\x0f\x01\x00\x00\x00\x00" + b"\x21\x00\x07TLSv1.3")
    vpce = b"\xea\x00\x05\x01vpce"
    assert send(gw.port, v2("203.0.113.14", tlvs=vpce + tls)) == 200
    entry = poll_until(lambda: next(
        (e for e in gw.access_log() if e.get("client") == "203.0.113.14"), None), timeout=5)
    assert entry["proxy"] == {"balancer": "127.0.0.1", "vpce_id": "vpce", "tls_version": "TLSv1.3"}


def test_no_proxy_member_without_a_header(gw, up) -> None:
    assert send(OPTIONAL_PORT, b"", target=b"/plain-log") == 200
    entry = poll_until(lambda: next(
        (e for e in gw.access_log() if e.get("path") == "/plain-log"), None), timeout=5)
    assert "proxy" not in entry
