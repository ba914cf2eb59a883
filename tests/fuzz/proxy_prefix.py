"""The HTTP/1.1 fuzz target's PROXY-prefixed mode: HTTP bytes behind a PROXY protocol header,
sent to a listener that requires one or takes one optionally (docs/edge.md).

``data[0]`` in 0xA0-0xBF chooses it (no regression input of the other modes starts so);
its low bits keep their meaning (bit 0 structured, bit 1 and 2 as in raw mode) and:

- bit 4: the listener's mode is ``optional`` (else ``required``);
- bit 3: the harness writes a valid v2 header in front of the input's stream (raw mode; else
  the stream must carry its own, which the seeds and the dictionary give), or picks v2
  rather than v1 (structured mode, which always gets a valid header from the harness);
- bit 1 (raw mode): the peer is the balancer (inside ``trustedSources``); else a stranger.
  Structured mode always connects from the balancer.

What the listener must do is decided from the whole stream by ``ProxyHeaderReader`` (the
``proxy`` target checks that reading in pieces agrees with it). On top of the mode's own
properties: a connection the listener must refuse (no valid header in required mode, a
malformed or unfinished one in either mode, a header or, in required mode, any byte from a
stranger) gets no byte of answer and nothing of it reaches an upstream, and the gateway stops
reading it before ``DEFAULT_MAX_LENGTH`` bytes; on an accepted connection every request
reaches the upstream with the header's client (else the peer) as its only X-Forwarded-For.
A header arriving across a pause may time out: that only turns an accepted connection into
a refused one, which these properties allow.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from propylon.ir.model import ListenerLimitsIR, ProxyProtocolIR
from propylon.proxy.proxy_protocol import (
    DEFAULT_MAX_LENGTH,
    Absent,
    Parsed,
    ProxyHeaderReader,
    ProxyProtocolError,
    build_proxy_header,
)
from propylon.proxy.worker_state import ListenerState
from tests.fuzz.fake_upstream import UpstreamRequest

BALANCER_PEER = ("10.0.0.5", 41000)  # inside the PROXY listeners' trustedSources
STRANGER_PEER = ("198.51.100.7", 40000)
TRUSTED_SOURCES = ("10.0.0.0/8",)
HEADER_CLIENT = ("203.0.113.9", 50000, "192.0.2.1", 8080)  # in the headers the harness writes
TRUSTED_PROXIES = ipaddress.ip_network("192.0.2.0/24")  # the harness gateway's trustedProxies


def is_proxy_mode(flags: int) -> bool:
    return 0xA0 <= flags <= 0xBF


def proxy_listeners(base: ListenerState, limits: ListenerLimitsIR) -> dict[bool, ListenerState]:
    """Listeners like ``base`` (same gateway, hosts, ``limits``) reading a PROXY header
    first, by ``optional``."""
    listeners = {}
    for optional in (False, True):
        listener = ListenerState(base.address, base.port)
        listener.gateway = base.gateway
        listener.hosts = base.hosts
        listener.set_limits(limits)
        listener.http2 = False  # as the base listener: the HTTP/1.1 codec only
        listener.set_proxy_protocol(ProxyProtocolIR(
            mode="optional" if optional else "required", trusted_sources=TRUSTED_SOURCES))
        listeners[optional] = listener
    return listeners


@dataclass
class Expected:
    """What the listener must do with a connection: ``refused``, ``plain`` (optional mode, no
    header) or ``header``; ``used``: the header's bytes; ``client``: the address the gateway
    must forward as the client."""

    outcome: str
    used: int = 0
    client: str = ""


@dataclass
class ProxyPlan:
    optional: bool
    peer: tuple[str, int]
    header: bytes  # written by the harness in front of the stream (may be empty)

    @classmethod
    def from_flags(cls, flags: int, structured: bool) -> ProxyPlan:
        if structured:
            return cls(bool(flags & 0x10), BALANCER_PEER,
                       build_proxy_header(2 if flags & 8 else 1, HEADER_CLIENT))
        return cls(bool(flags & 0x10), BALANCER_PEER if flags & 2 else STRANGER_PEER,
                   build_proxy_header(2, HEADER_CLIENT) if flags & 8 else b"")

    def expect(self, stream: bytes) -> Expected:
        """What the listener must do with a connection that sends ``stream`` (the header
        included), however it is cut into reads."""
        trusted = ipaddress.ip_address(self.peer[0]) in ipaddress.ip_network(TRUSTED_SOURCES[0])
        if not self.optional and not trusted:
            return Expected("refused")
        try:
            result = ProxyHeaderReader(optional=self.optional).feed(stream)
        except ProxyProtocolError:
            return Expected("refused")
        if isinstance(result, Absent):
            return Expected("plain", 0, self.peer[0])
        if not isinstance(result, Parsed) or not trusted:
            return Expected("refused")  # unfinished, or a header from a stranger
        header = result.header
        named = header.source is not None and header.command == "proxy"
        client = header.source[0] if named and header.source is not None else self.peer[0]
        return Expected("header", len(stream) - len(result.rest), client)


def refusal_bound(expected: Expected) -> int | None:
    """Bytes after which the gateway must have stopped reading a connection it refuses."""
    return DEFAULT_MAX_LENGTH if expected.outcome == "refused" else None


def model_skip(expected: Expected) -> int | None:
    """Bytes at the start of the stream that are not HTTP (None: none of it is read as
    HTTP)."""
    return None if expected.outcome == "refused" else expected.used


def check_outcome(expected: Expected, output: bytes, requests: list[UpstreamRequest],
                  problem: Callable[[str], None]) -> None:
    """The PROXY-mode properties, once the connection ended (``requests``: what reached the
    upstreams, ``problem``: where a broken property is reported)."""
    if expected.outcome == "refused":
        if output:
            problem(f"answered a connection the PROXY listener must refuse: {output[:120]!r}")
        if requests:
            problem(f"{len(requests)} request(s) forwarded from a connection the PROXY "
                    "listener must refuse")
        return
    if _trusted_proxy(expected.client):
        return  # a client that is itself a trusted proxy may pass X-Forwarded-For on
    for request in requests:
        if request.mirrored:
            continue
        forwarded = request.header(b"x-forwarded-for")
        if forwarded is None or not _same_address(forwarded, expected.client):
            problem(f"X-Forwarded-For {forwarded!r} upstream; the client is "
                    f"{expected.client} ({expected.outcome})")


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted_proxy(client: str) -> bool:
    address = _address(client)
    return address is not None and address in TRUSTED_PROXIES


def _same_address(forwarded: bytes, client: str) -> bool:
    value = forwarded.decode("latin-1")
    if "," in value:
        return False  # one hop: the client alone
    expected = _address(client)
    return expected is not None and _address(value.strip()) == expected
