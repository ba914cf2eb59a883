"""X-Forwarded-For / -Proto / -Host and Forwarded (RFC 7239) with trusted proxies.

A client's own claims are believed only when the peer that sent them is a trusted proxy:
- untrusted peer: every forwarding header it sent is replaced; the client IP is the peer;
- trusted peer: its X-Forwarded-For and Forwarded are extended with the peer address, its
  -Proto and -Host are kept, and the client IP is the right-most X-Forwarded-For address that
  is not itself a trusted proxy (the left-most one if all are).

An X-Forwarded-For hop is read as an address with or without a port (``192.0.2.1:4711``,
``[2001:db8::1]:4711``, as Azure Application Gateway and IIS ARR write them): a port must not
make one client many (a per-address rate limit) nor hide a trusted proxy. A hop that is no
address at all ends the walk, as nginx's realip does: the client is the last address read
(the hop after it, or the peer), never a text no address filter can match.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable

from propylon.proxy.http11 import Headers


@functools.lru_cache(maxsize=4096)  # a few addresses come again and again
def hop_address(hop: str) -> str | None:
    """The address an X-Forwarded-For hop names, without a port; None if it names none."""
    text = hop
    if text.startswith("["):  # [IPv6] or [IPv6]:port
        text, _, rest = text[1:].partition("]")
        if rest and not (rest[0] == ":" and rest[1:].isdigit()):
            return None
    elif text.count(":") == 1:  # IPv4:port (an IPv6 address has at least two colons)
        text, _, port = text.partition(":")
        if not port.isdigit():
            return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # one text per address (2001:DB8::1 and 2001:db8::1 are one client; ::ffff:192.0.2.1 is
    # 192.0.2.1), as the peer's own address is written
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return str(mapped or address)


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
