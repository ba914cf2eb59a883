"""The PROXY protocol (HAProxy's, versions 1 and 2), sans-IO.

A balancer in front of the gateway writes one header at the start of a connection, before
HTTP or TLS, naming the client's address. ``parse_proxy_header`` is a pure function over the
bytes received so far: it returns ``None`` while the header is incomplete, the parsed header
and its length once complete, and raises ``ProxyProtocolError`` (with a reason naming what is
wrong) as soon as the bytes cannot begin a valid header. ``ProxyHeaderReader`` keeps the
bytes of a connection between reads and also answers "no header" for the optional mode.
Every input is bounded: version 1 by its 107 bytes, version 2 by ``max_length``.
"""

from __future__ import annotations

import ipaddress
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Literal

V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # the spec's bound, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER_LENGTH = 16
DEFAULT_MAX_LENGTH = 4096

# TLV types (version 2)
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_SUBTYPE_SSL_SIG_ALG = 0x24
PP2_SUBTYPE_SSL_KEY_ALG = 0x25
PP2_TYPE_NETNS = 0x30
PP2_TYPE_AWS = 0xEA
PP2_SUBTYPE_AWS_VPCE_ID = 0x01

_FAMILY_UNSPEC, _FAMILY_INET, _FAMILY_INET6, _FAMILY_UNIX = 0, 1, 2, 3
_TRANSPORT_UNSPEC, _TRANSPORT_STREAM, _TRANSPORT_DGRAM = 0, 1, 2
_ADDRESS_LENGTH = {_FAMILY_INET: 12, _FAMILY_INET6: 36, _FAMILY_UNIX: 216}


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY header; ``reason`` says what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SslInfo:
    """PP2_TYPE_SSL: what the balancer saw of the client's TLS."""

    client: int
    verify: int
    version: str | None = None
    common_name: str | None = None
    cipher: str | None = None
    sig_alg: str | None = None
    key_alg: str | None = None

    @property
    def client_ssl(self) -> bool:
        return bool(self.client & 0x01)


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header. ``source``/``destination`` are None when the header carries no
    address (v1 UNKNOWN, v2 LOCAL, UNSPEC or UNIX): the connection's own address stands."""

    version: Literal[1, 2]
    command: Literal["proxy", "local"]
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None
    tlvs: tuple[tuple[int, bytes], ...] = field(default=())

    def tlv(self, kind: int) -> bytes | None:
        """The first TLV of this type, or None."""
        for tlv_type, value in self.tlvs:
            if tlv_type == kind:
                return value
        return None

    @property
    def aws_vpce_id(self) -> str | None:
        """The AWS VPC endpoint id (TLV 0xEA, subtype 0x01), if the balancer sent one."""
        for tlv_type, value in self.tlvs:
            if tlv_type == PP2_TYPE_AWS and value[:1] == bytes([PP2_SUBTYPE_AWS_VPCE_ID]):
                return value[1:].decode("ascii", "replace")
        return None

    @property
    def ssl(self) -> SslInfo | None:
        value = self.tlv(PP2_TYPE_SSL)
        return None if value is None else _parse_ssl(value)

    @property
    def authority(self) -> str | None:
        value = self.tlv(PP2_TYPE_AUTHORITY)
        return None if value is None else value.decode("utf-8", "replace")

    @property
    def alpn(self) -> bytes | None:
        return self.tlv(PP2_TYPE_ALPN)


def access_log_fields(header: ProxyHeader, balancer: str) -> dict[str, str]:
    """What the access log records of a PROXY header: the balancer's own address and the
    TLVs worth keeping (AWS VPC endpoint id, authority, the TLS the balancer terminated)."""
    fields = {"balancer": balancer}
    if header.aws_vpce_id is not None:
        fields["vpce_id"] = header.aws_vpce_id
    if header.authority is not None:
        fields["authority"] = header.authority
    try:
        ssl = header.ssl
    except ProxyProtocolError:
        ssl = None
    if ssl is not None:
        for name, value in (("tls_version", ssl.version), ("tls_cn", ssl.common_name),
                            ("tls_cipher", ssl.cipher)):
            if value is not None:
                fields[name] = value
    return fields


def access_log_fragment(header: ProxyHeader, balancer: str) -> str:
    """``,"proxy":{...}``, appended to a JSON access-log line (computed once per connection)."""
    return ',"proxy":' + json.dumps(access_log_fields(header, balancer), separators=(",", ":"))


def looks_like_proxy_header(data: bytes) -> bool | None:
    """Whether a connection's first bytes start a PROXY header (either version): True, False,
    or None when too few bytes arrived to tell. Used by the optional mode."""
    for prefix in (V1_PREFIX, V2_SIGNATURE):
        common = min(len(data), len(prefix))
        if data[:common] == prefix[:common]:
            return True if common == len(prefix) else None
    return False


def parse_proxy_header(
    data: bytes,
    *,
    versions: frozenset[int] = frozenset({1, 2}),
    max_length: int = DEFAULT_MAX_LENGTH,
) -> tuple[ProxyHeader, int] | None:
    """(header, bytes it used), or None when more bytes are needed; raises ProxyProtocolError."""
    if not data:
        return None
    if data[:1] == V1_PREFIX[:1]:
        if 1 not in versions:
            raise ProxyProtocolError("PROXY protocol version 1 is not accepted on this listener")
        return _parse_v1(data)
    if data[:1] == V2_SIGNATURE[:1]:
        if 2 not in versions:
            raise ProxyProtocolError("PROXY protocol version 2 is not accepted on this listener")
        return _parse_v2(data, max_length)
    raise ProxyProtocolError("no PROXY protocol signature")


# --- version 1 -------------------------------------------------------------------------------


def _parse_v1(data: bytes) -> tuple[ProxyHeader, int] | None:
    common = min(len(data), len(V1_PREFIX))
    if data[:common] != V1_PREFIX[:common]:
        raise ProxyProtocolError("wrong version 1 signature (expected 'PROXY ')")
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyProtocolError("version 1 header longer than 107 bytes")
        if b"\n" in data or b"\r" in data[:-1]:
            raise ProxyProtocolError("version 1 header not ended by CRLF")
        return None
    line = data[len(V1_PREFIX) : end]
    if b"\n" in line or b"\r" in line:
        raise ProxyProtocolError("version 1 header not ended by CRLF")
    consumed = end + 2
    if line == b"UNKNOWN" or line.startswith(b"UNKNOWN "):
        return ProxyHeader(version=1, command="proxy"), consumed
    parts = line.split(b" ")
    if len(parts) != 5:
        raise ProxyProtocolError("version 1 header needs: protocol src dst sport dport")
    proto, src, dst, sport, dport = parts
    if proto == b"TCP4":
        version = 4
    elif proto == b"TCP6":
        version = 6
    else:
        raise ProxyProtocolError(f"unknown version 1 protocol {proto[:16]!r}")
    source = (_v1_address(src, version, "source"), _v1_port(sport, "source"))
    destination = (_v1_address(dst, version, "destination"), _v1_port(dport, "destination"))
    return ProxyHeader(version=1, command="proxy", source=source, destination=destination), consumed


def _v1_address(raw: bytes, version: int, which: str) -> str:
    try:
        text = raw.decode("ascii")
        address = ipaddress.IPv4Address(text) if version == 4 else ipaddress.IPv6Address(text)
    except (UnicodeDecodeError, ValueError):
        raise ProxyProtocolError(
            f"bad version 1 {which} address {raw[:46]!r} for TCP{version}"
        ) from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise ProxyProtocolError(f"bad version 1 {which} address {raw[:46]!r} (scope id)")
    return str(address)


def _v1_port(raw: bytes, which: str) -> int:
    if not raw.isdigit() or len(raw) > 5 or (len(raw) > 1 and raw[:1] == b"0"):
        raise ProxyProtocolError(f"bad version 1 {which} port {raw[:8]!r}")
    port = int(raw)
    if port > 65535:
        raise ProxyProtocolError(f"version 1 {which} port {port} out of range")
    return port


# --- version 2 -------------------------------------------------------------------------------


def _parse_v2(data: bytes, max_length: int) -> tuple[ProxyHeader, int] | None:
    common = min(len(data), len(V2_SIGNATURE))
    if data[:common] != V2_SIGNATURE[:common]:
        raise ProxyProtocolError("wrong version 2 signature")
    if len(data) < V2_HEADER_LENGTH:
        return None
    version_command, family_transport, length = struct.unpack_from("!BBH", data, 12)
    if version_command >> 4 != 2:
        raise ProxyProtocolError(f"wrong version {version_command >> 4} in a version 2 header")
    command_code = version_command & 0x0F
    if command_code not in (0, 1):
        raise ProxyProtocolError(f"unknown version 2 command {command_code}")
    family, transport = family_transport >> 4, family_transport & 0x0F
    if family > _FAMILY_UNIX:
        raise ProxyProtocolError(f"unknown version 2 address family {family}")
    if transport > _TRANSPORT_DGRAM:
        raise ProxyProtocolError(f"unknown version 2 transport {transport}")
    total = V2_HEADER_LENGTH + length
    if total > max_length:
        raise ProxyProtocolError(f"version 2 header of {total} bytes exceeds {max_length}")
    if len(data) < total:
        return None
    body = bytes(data[V2_HEADER_LENGTH:total])
    if command_code == 0:  # LOCAL: the balancer's own connection (health checks)
        return ProxyHeader(version=2, command="local", tlvs=_v2_tlvs_lenient(body, family)), total
    if family in (_FAMILY_INET, _FAMILY_INET6) and transport != _TRANSPORT_STREAM:
        raise ProxyProtocolError("version 2 header for a non-stream transport")
    address_length = _ADDRESS_LENGTH.get(family, 0)
    if length < address_length:
        raise ProxyProtocolError(
            f"version 2 address block of {length} bytes, family needs {address_length}"
        )
    source = destination = None
    if family == _FAMILY_INET:
        src4, dst4, sport, dport = struct.unpack_from("!4s4sHH", body)
        source = (str(ipaddress.IPv4Address(src4)), sport)
        destination = (str(ipaddress.IPv4Address(dst4)), dport)
    elif family == _FAMILY_INET6:
        src6, dst6, sport, dport = struct.unpack_from("!16s16sHH", body)
        source = (str(ipaddress.IPv6Address(src6)), sport)
        destination = (str(ipaddress.IPv6Address(dst6)), dport)
    tlvs = _v2_tlvs(body[address_length:])
    return ProxyHeader(2, "proxy", source=source, destination=destination, tlvs=tlvs), total


def _v2_tlvs(block: bytes) -> tuple[tuple[int, bytes], ...]:
    tlvs: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(block):
        if len(block) - offset < 3:
            raise ProxyProtocolError("truncated version 2 TLV header")
        kind, size = struct.unpack_from("!BH", block, offset)
        offset += 3
        if size > len(block) - offset:
            raise ProxyProtocolError(
                f"version 2 TLV 0x{kind:02x} of {size} bytes overruns the header"
            )
        value = block[offset : offset + size]
        offset += size
        if kind == PP2_TYPE_SSL:
            _parse_ssl(value)  # validated now, not when the access log asks
        if kind != PP2_TYPE_NOOP:
            tlvs.append((kind, value))
    return tuple(tlvs)


def _v2_tlvs_lenient(body: bytes, family: int) -> tuple[tuple[int, bytes], ...]:
    """LOCAL headers are kept but their content is not trusted to be well formed."""
    try:
        return _v2_tlvs(body[_ADDRESS_LENGTH.get(family, 0) :])
    except ProxyProtocolError:
        return ()


def _parse_ssl(value: bytes) -> SslInfo:
    if len(value) < 5:
        raise ProxyProtocolError("version 2 SSL TLV shorter than 5 bytes")
    client, verify = struct.unpack_from("!BI", value)
    fields: dict[int, str] = {}
    for kind, sub in _v2_tlvs(value[5:]):
        fields.setdefault(kind, sub.decode("utf-8", "replace"))
    return SslInfo(
        client=client,
        verify=verify,
        version=fields.get(PP2_SUBTYPE_SSL_VERSION),
        common_name=fields.get(PP2_SUBTYPE_SSL_CN),
        cipher=fields.get(PP2_SUBTYPE_SSL_CIPHER),
        sig_alg=fields.get(PP2_SUBTYPE_SSL_SIG_ALG),
        key_alg=fields.get(PP2_SUBTYPE_SSL_KEY_ALG),
    )


# --- a connection's reader -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pending:
    """More bytes are needed."""


@dataclass(frozen=True, slots=True)
class Parsed:
    """A header arrived; ``rest`` is what followed it (the start of HTTP or TLS)."""

    header: ProxyHeader
    rest: bytes


@dataclass(frozen=True, slots=True)
class Absent:
    """No header (optional mode only); ``data`` is everything received, to be handed on."""

    data: bytes


ReadResult = Pending | Parsed | Absent

PENDING = Pending()


class ProxyHeaderReader:
    """Accumulates a connection's first bytes until a header is complete.

    ``feed`` returns Pending, Parsed or Absent, and raises ProxyProtocolError. It never holds
    more than the larger of 107 bytes and ``max_length`` (plus one read's excess).
    """

    __slots__ = ("_buffer", "_max_length", "_optional", "_versions")

    def __init__(
        self,
        *,
        versions: frozenset[int] = frozenset({1, 2}),
        optional: bool = False,
        max_length: int = DEFAULT_MAX_LENGTH,
    ) -> None:
        self._buffer = b""
        self._versions = versions
        self._optional = optional
        self._max_length = max_length

    def feed(self, data: bytes) -> ReadResult:
        buffer = self._buffer + data if self._buffer else bytes(data)
        if self._optional:
            looks = looks_like_proxy_header(buffer)
            if looks is None:
                self._buffer = buffer
                return PENDING
            if not looks:
                self._buffer = b""
                return Absent(buffer)
        result = parse_proxy_header(buffer, versions=self._versions, max_length=self._max_length)
        if result is None:
            self._buffer = buffer
            return PENDING
        header, used = result
        self._buffer = b""
        return Parsed(header, buffer[used:])


# --- writing (to upstreams that expect a header) ----------------------------------------------


_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _same_family(source: _Address, destination: _Address) -> tuple[_Address, _Address]:
    """Both addresses in one family: an IPv4 one is mapped (::ffff:a.b.c.d) when the other is
    IPv6; an IPv4-mapped pair is written as IPv4."""
    if isinstance(source, ipaddress.IPv6Address) and source.ipv4_mapped is not None:
        source = source.ipv4_mapped
    if isinstance(destination, ipaddress.IPv6Address) and destination.ipv4_mapped is not None:
        destination = destination.ipv4_mapped
    if source.version == destination.version:
        return source, destination
    if source.version == 4:
        return ipaddress.IPv6Address(f"::ffff:{source}"), destination
    return source, ipaddress.IPv6Address(f"::ffff:{destination}")


def upstream_client_addresses(
    header: ProxyHeader | None, transport: Any, client_ip: str
) -> tuple[str, int, str, int] | None:
    """(client ip, port, address it reached, port) for an upstream PROXY header: from the
    header a balancer sent, else the connection's own addresses; the port is the peer's when
    ``client_ip`` is the peer's address, else 0 (unknown)."""
    if header is not None and header.source is not None and header.destination is not None:
        (peer_ip, peer_port), (local_ip, local_port) = header.source, header.destination
    else:
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        if not peer or not local:
            return None
        peer_ip, peer_port, local_ip, local_port = peer[0], peer[1], local[0], local[1]
    return client_ip, peer_port if client_ip == peer_ip else 0, local_ip, local_port


def build_proxy_header(
    version: int, addresses: tuple[str, int, str, int] | None
) -> bytes:
    """The header a gateway writes at the start of an upstream connection: ``addresses`` is
    (source ip, source port, destination ip, destination port); None (or unparseable
    addresses) gives v1 ``UNKNOWN`` / a v2 LOCAL header, which names no client."""
    pair = None
    if addresses is not None:
        try:
            pair = _same_family(
                ipaddress.ip_address(addresses[0]), ipaddress.ip_address(addresses[2])
            )
        except ValueError:
            pair = None
    if version == 1:
        if pair is None:
            return b"PROXY UNKNOWN\r\n"
        assert addresses is not None
        proto = "TCP4" if pair[0].version == 4 else "TCP6"
        return (
            f"PROXY {proto} {pair[0]} {pair[1]} {addresses[1]} {addresses[3]}\r\n".encode()
        )
    if pair is None:
        return V2_SIGNATURE + b"\x20\x00\x00\x00"  # LOCAL, UNSPEC, no addresses
    assert addresses is not None
    family = 0x11 if pair[0].version == 4 else 0x21
    body = pair[0].packed + pair[1].packed + struct.pack("!HH", addresses[1], addresses[3])
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body
