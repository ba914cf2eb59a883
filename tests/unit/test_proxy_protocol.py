"""The PROXY protocol parser: both versions, TLVs, incremental reads, every malformed case."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from propylon.proxy.proxy_protocol import (
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_AWS,
    PP2_TYPE_NOOP,
    PP2_TYPE_SSL,
    V2_SIGNATURE,
    Absent,
    Parsed,
    Pending,
    ProxyHeaderReader,
    ProxyProtocolError,
    looks_like_proxy_header,
    parse_proxy_header,
)


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def v2(
    *,
    command: int = 1,
    version: int = 2,
    family: int = 1,
    transport: int = 1,
    src: str = "203.0.113.7",
    dst: str = "192.0.2.1",
    sport: int = 51000,
    dport: int = 443,
    tlvs: bytes = b"",
    length: int | None = None,
    signature: bytes = V2_SIGNATURE,
) -> bytes:
    if family == 1:
        addresses = (
            ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
            + struct.pack("!HH", sport, dport)
        )
    elif family == 2:
        addresses = (
            ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
            + struct.pack("!HH", sport, dport)
        )
    elif family == 3:
        addresses = b"/tmp/a".ljust(108, b"\0") + b"/tmp/b".ljust(108, b"\0")
    else:
        addresses = b""
    body = addresses + tlvs
    size = len(body) if length is None else length
    return signature + bytes([version << 4 | command, family << 4 | transport]) + (
        struct.pack("!H", size) + body
    )


SSL_TLV = tlv(
    PP2_TYPE_SSL,
    bytes([0x07]) + struct.pack("!I", 0)
    + tlv(0x21, b"TLSv1.3") + tlv(0x22, b"client.example") + tlv(0x23, b"TLS_AES_128_GCM_SHA256"),
)
VPCE_TLV = tlv(PP2_TYPE_AWS, b"\x01vpce-08d2bf15fac5001c9")

VALID = [
    pytest.param(b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 80\r\n", 1,
                 ("203.0.113.7", 51000), ("192.0.2.1", 80), id="v1-tcp4"),
    pytest.param(b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n", 1,
                 ("2001:db8::7", 65535), ("2001:db8::1", 0), id="v1-tcp6"),
    pytest.param(b"PROXY UNKNOWN\r\n", 1, None, None, id="v1-unknown"),
    pytest.param(b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", 1,
                 None, None, id="v1-unknown-with-junk"),
    pytest.param(v2(), 2, ("203.0.113.7", 51000), ("192.0.2.1", 443), id="v2-inet"),
    pytest.param(v2(family=2, src="2001:db8::7", dst="2001:db8::1"), 2,
                 ("2001:db8::7", 51000), ("2001:db8::1", 443), id="v2-inet6"),
    pytest.param(v2(command=0, family=0, transport=0), 2, None, None, id="v2-local"),
    pytest.param(v2(family=0, transport=0), 2, None, None, id="v2-proxy-unspec"),
    pytest.param(v2(family=3), 2, None, None, id="v2-unix-ignored"),
    pytest.param(v2(tlvs=VPCE_TLV + SSL_TLV), 2,
                 ("203.0.113.7", 51000), ("192.0.2.1", 443), id="v2-tlvs"),
]


@pytest.mark.parametrize(("data", "version", "source", "destination"), VALID)
def test_valid_headers(data, version, source, destination) -> None:
    result = parse_proxy_header(data + b"GET / HTTP/1.1\r\n")
    assert result is not None
    header, used = result
    assert used == len(data)
    assert header.version == version
    assert header.source == source
    assert header.destination == destination


def test_v2_tlvs_are_kept() -> None:
    data = v2(tlvs=VPCE_TLV + SSL_TLV + tlv(PP2_TYPE_NOOP, b"\0" * 4)
              + tlv(PP2_TYPE_ALPN, b"h2") + tlv(PP2_TYPE_AUTHORITY, b"api.example"))
    result = parse_proxy_header(data)
    assert result is not None
    header = result[0]
    assert header.aws_vpce_id == "vpce-08d2bf15fac5001c9"
    assert header.alpn == b"h2"
    assert header.authority == "api.example"
    assert header.tlv(PP2_TYPE_NOOP) is None  # padding is dropped
    ssl = header.ssl
    assert ssl is not None and ssl.client_ssl
    assert (ssl.version, ssl.common_name, ssl.cipher) == (
        "TLSv1.3", "client.example", "TLS_AES_128_GCM_SHA256")


def test_v2_local_is_local() -> None:
    result = parse_proxy_header(v2(command=0))
    assert result is not None
    assert result[0].command == "local" and result[0].source is None


MALFORMED = [
    # version 1
    pytest.param(b"PROXI TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "signature", id="v1-wrong-signature"),
    pytest.param(b"GET / HTTP/1.1\r\n", "signature", id="http-not-proxy"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "CRLF", id="v1-bare-lf"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\r\n", "CRLF", id="v1-bare-cr"),
    pytest.param(b"PROXY TCP4 " + b"1" * 100, "107", id="v1-too-long"),
    pytest.param(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "protocol", id="v1-unknown-protocol"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "needs", id="v1-missing-field"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "needs", id="v1-extra-field"),
    pytest.param(b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "needs", id="v1-double-space"),
    pytest.param(b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "source address", id="v1-bad-octet"),
    pytest.param(b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "source address", id="v1-short-ipv4"),
    pytest.param(b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "source address", id="v1-leading-zero"),
    pytest.param(b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n", "source address", id="v1-v6-in-tcp4"),
    pytest.param(b"PROXY TCP6 2001:db8::1 5.6.7.8 1 2\r\n", "destination address",
                 id="v1-v4-in-tcp6"),
    pytest.param(b"PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n", "source address", id="v1-scope-id"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "out of range", id="v1-port-range"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "source port", id="v1-port-zero-pad"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "source port", id="v1-port-negative"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n", "destination port", id="v1-port-plus"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xff\r\n", "destination port", id="v1-port-bin"),
    pytest.param(b"PROXY TCP4 1.2.3.\xc4 5.6.7.8 1 2\r\n", "source address", id="v1-non-ascii"),
    pytest.param(b"PROXY \r\n", "needs", id="v1-empty"),
    # version 2
    pytest.param(v2(signature=b"\r\n\r\n\x00\r\nQUIT\r"), "signature", id="v2-wrong-signature"),
    pytest.param(v2(version=1), "wrong version 1", id="v2-version-1"),
    pytest.param(v2(version=3), "wrong version 3", id="v2-version-3"),
    pytest.param(v2(command=2), "command", id="v2-unknown-command"),
    pytest.param(v2(family=4), "address family", id="v2-unknown-family"),
    pytest.param(v2(family=15), "address family", id="v2-family-15"),
    pytest.param(v2(transport=3), "transport", id="v2-unknown-transport"),
    pytest.param(v2(transport=2), "non-stream", id="v2-datagram"),
    pytest.param(v2(length=8), "address block", id="v2-short-inet-block"),
    pytest.param(v2(family=2, src="::1", dst="::1", length=20), "address block",
                 id="v2-short-inet6-block"),
    pytest.param(v2(length=0xFFFF) + b"\0" * 0xFFFF, "exceeds", id="v2-oversized-length"),
    pytest.param(v2(tlvs=b"\x20\x00"), "truncated version 2 TLV", id="v2-truncated-tlv-header"),
    pytest.param(v2(tlvs=struct.pack("!BH", 0xEA, 40) + b"\x01vpce"), "overruns",
                 id="v2-oversized-tlv"),
    pytest.param(v2(tlvs=tlv(PP2_TYPE_SSL, b"\x01\0\0")), "SSL TLV", id="v2-short-ssl-tlv"),
    pytest.param(v2(tlvs=tlv(PP2_TYPE_SSL, b"\x01\0\0\0\0" + struct.pack("!BH", 0x21, 9) + b"TLS")),
                 "overruns", id="v2-ssl-subtlv-overrun"),
]


@pytest.mark.parametrize(("data", "reason"), MALFORMED)
def test_malformed_headers(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyProtocolError) as caught:
        parse_proxy_header(data)
    assert reason in caught.value.reason


@pytest.mark.parametrize(("data", "reason"), MALFORMED)
def test_malformed_headers_fail_byte_by_byte(data: bytes, reason: str) -> None:
    reader = ProxyHeaderReader()
    with pytest.raises(ProxyProtocolError) as caught:
        for offset in range(len(data)):
            reader.feed(data[offset : offset + 1])
    assert reason in caught.value.reason


@pytest.mark.parametrize(("data", "version", "source", "destination"), VALID)
def test_truncated_headers_wait(data, version, source, destination) -> None:
    for cut in range(len(data)):
        assert parse_proxy_header(data[:cut]) is None


@pytest.mark.parametrize(("data", "version", "source", "destination"), VALID)
def test_reader_byte_by_byte(data, version, source, destination) -> None:
    reader = ProxyHeaderReader()
    stream = data + b"GET / HTTP/1.1\r\n"
    results = [reader.feed(stream[i : i + 1]) for i in range(len(data))]
    assert all(isinstance(result, Pending) for result in results[:-1])
    last = results[-1]
    assert isinstance(last, Parsed)
    assert last.header.source == source
    assert last.rest == b""
    # the bytes after the header in the same read are handed on
    whole = ProxyHeaderReader().feed(stream)
    assert isinstance(whole, Parsed) and whole.rest == b"GET / HTTP/1.1\r\n"


def test_version_not_accepted() -> None:
    with pytest.raises(ProxyProtocolError, match="version 1 is not accepted"):
        parse_proxy_header(b"PROXY UNKNOWN\r\n", versions=frozenset({2}))
    with pytest.raises(ProxyProtocolError, match="version 2 is not accepted"):
        parse_proxy_header(v2(), versions=frozenset({1}))


def test_v2_length_bound_is_checked_before_the_body_arrives() -> None:
    header = v2(length=5000)[:16]
    with pytest.raises(ProxyProtocolError, match="exceeds 4096"):
        parse_proxy_header(header)
    assert parse_proxy_header(header, max_length=8192) is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", None), (b"P", None), (b"PROXY", None), (b"PROXY ", True), (b"\r\n\r\n", None),
        (V2_SIGNATURE, True), (b"GET / HTTP/1.1\r\n", False), (b"PRI * HTTP/2.0", False),
        (b"\x16\x03\x01", False), (b"\r\n\r\nX", False), (b"PROXX", False),
    ],
)
def test_detection(data: bytes, expected: bool | None) -> None:
    assert looks_like_proxy_header(data) is expected


def test_optional_reader_hands_http_on() -> None:
    reader = ProxyHeaderReader(optional=True)
    assert isinstance(reader.feed(b"PR"), Pending)
    result = reader.feed(b"OXY-ish / HTTP/1.1\r\n")
    assert result == Absent(b"PROXY-ish / HTTP/1.1\r\n")
    result = ProxyHeaderReader(optional=True).feed(b"GET / HTTP/1.1\r\n")
    assert result == Absent(b"GET / HTTP/1.1\r\n")


def test_optional_reader_parses_a_header() -> None:
    result = ProxyHeaderReader(optional=True).feed(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET")
    assert isinstance(result, Parsed)
    assert result.header.source == ("1.2.3.4", 1) and result.rest == b"GET"


def test_required_reader_refuses_http() -> None:
    with pytest.raises(ProxyProtocolError, match="no PROXY protocol signature"):
        ProxyHeaderReader().feed(b"GET / HTTP/1.1\r\n")


@pytest.mark.parametrize(("addresses", "source", "destination"), [
    (("203.0.113.7", 51000, "192.0.2.1", 80), ("203.0.113.7", 51000), ("192.0.2.1", 80)),
    (("2001:db8::7", 1, "2001:db8::1", 2), ("2001:db8::7", 1), ("2001:db8::1", 2)),
    (("2001:db8::7", 1, "192.0.2.1", 2), ("2001:db8::7", 1), ("::ffff:c000:201", 2)),
    (("::ffff:203.0.113.7", 1, "192.0.2.1", 2), ("203.0.113.7", 1), ("192.0.2.1", 2)),
    (None, None, None),
    (("not-an-ip", 1, "192.0.2.1", 2), None, None),
])
@pytest.mark.parametrize("version", [1, 2])
def test_built_headers_parse_back(version: int, addresses, source, destination) -> None:
    from propylon.proxy.proxy_protocol import build_proxy_header

    data = build_proxy_header(version, addresses)
    result = parse_proxy_header(data)
    assert result is not None
    header, used = result
    assert used == len(data)
    assert header.version == version
    if version == 1 and source is not None and ":" in source[0]:
        destination = (str(ipaddress.ip_address(destination[0])), destination[1])
    assert header.source == source
    assert header.destination == destination
    if version == 2 and source is None:
        assert header.command == "local"


def test_access_log_fragment() -> None:
    import json

    from propylon.proxy.proxy_protocol import access_log_fragment

    result = parse_proxy_header(v2(tlvs=VPCE_TLV + SSL_TLV + tlv(PP2_TYPE_AUTHORITY, b'a"b')))
    assert result is not None
    fragment = access_log_fragment(result[0], "10.0.0.5")
    assert fragment.startswith(',"proxy":')
    assert json.loads(fragment[len(',"proxy":'):]) == {
        "balancer": "10.0.0.5", "vpce_id": "vpce-08d2bf15fac5001c9", "authority": 'a"b',
        "tls_version": "TLSv1.3", "tls_cn": "client.example",
        "tls_cipher": "TLS_AES_128_GCM_SHA256",
    }
