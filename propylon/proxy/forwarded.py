"""X-Forwarded-For / -Proto / -Host and Forwarded (RFC 7239) with trusted proxies.

A client's own claims are believed only when the peer that sent them is a trusted proxy:
- untrusted peer: every forwarding header it sent is replaced; the client IP is the peer;
- trusted peer: its X-Forwarded-For and Forwarded are extended with the peer address, its
  -Proto and -Host are kept, and the client IP is the right-most X-Forwarded-For address that
  is not itself a trusted proxy (the left-most one if all are).

An X-Forwarded-For hop is read as an address with or without a port (``192.0.2.1:4711``,
``[2001:db8::1]:4711``) by ``net.addresses.hop_address``, as ``ipFilter`` reads the client's
address. A hop that is no address at all ends the walk, as nginx's realip does: the client is
the last address read (the hop after it, or the peer), never a text no address filter can
match.
"""

from __future__ import annotations

from collections.abc import Callable

from propylon.net.addresses import hop_address
from propylon.proxy.http11 import Headers


def client_ip_from_chain(chain: list[str], peer_ip: str, is_trusted: Callable[[str], bool]) -> str:
    """The real client address of a request that reached us through ``chain`` then ``peer``."""
    last = peer_ip
    for hop in reversed(chain):
        address = hop_address(hop)
        if address is None:
            return last  # not an address: what is left of the chain cannot be read
        if not is_trusted(address):
            return address
        last = address
    return last


def real_client_ip(
    received: dict[bytes, bytes], peer_ip: str, is_trusted: Callable[[str], bool]
) -> str:
    """The client IP of a request from a trusted peer, from its X-Forwarded-For chain."""
    xff = received.get(b"x-forwarded-for")
    chain = [h.strip() for h in xff.decode("latin-1").split(",") if h.strip()] if xff else []
    return client_ip_from_chain(chain, peer_ip, is_trusted)


def forwarding_headers(
    peer_ip: str,
    peer_trusted: bool,
    received: dict[bytes, bytes],
    scheme: bytes,
    host: bytes,
    is_trusted: Callable[[str], bool],
) -> tuple[str, Headers]:
    """The client IP and the forwarding header fields to send upstream.

    ``received`` holds the client's x-forwarded-for/-proto/-host and forwarded values (joined
    with ", " when repeated)."""
    peer = peer_ip.encode()
    node = b'"[' + peer + b']"' if b":" in peer else peer
    own_forwarded = b"for=" + node + b";proto=" + scheme + (b";host=" + host if host else b"")
    if not peer_trusted:
        return peer_ip, [
            (b"x-forwarded-for", peer),
            (b"x-forwarded-proto", scheme),
            (b"x-forwarded-host", host),
            (b"forwarded", own_forwarded),
        ]
    xff = received.get(b"x-forwarded-for")
    client_ip = real_client_ip(received, peer_ip, is_trusted)
    previous = received.get(b"forwarded")
    return client_ip, [
        (b"x-forwarded-for", xff + b", " + peer if xff else peer),
        (b"x-forwarded-proto", received.get(b"x-forwarded-proto") or scheme),
        (b"x-forwarded-host", received.get(b"x-forwarded-host") or host),
        (b"forwarded", previous + b", " + own_forwarded if previous else own_forwarded),
    ]
