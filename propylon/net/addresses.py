"""Reading a client address written as text: one reading for every layer.

An address may come with a port (``192.0.2.1:4711``, ``[2001:db8::1]:4711``, as Azure
Application Gateway and IIS ARR write X-Forwarded-For): a port must not make one client many
(a per-address rate limit), hide a trusted proxy, or let an address through an ``ipFilter``
deny list unread.
"""

from __future__ import annotations

import functools
import ipaddress


@functools.lru_cache(maxsize=4096)  # a few addresses come again and again
def hop_address(hop: str) -> str | None:
    """The address ``hop`` names, without a port; None if it names none."""
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
