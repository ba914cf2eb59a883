"""The ``ipFilter`` policy: allow and deny CIDR lists on the real client IP.

``ctx.client_ip`` is the address after ``trustedProxies`` (the exchange resolves it before any
``on_request`` filter runs). A deny match wins; with an allow list, only matching addresses
pass. Rejections are ``403``. An address given with a port (``192.0.2.1:4711``,
``[2001:db8::1]:4711``, as some proxies write X-Forwarded-For) is matched on its address;
IPv4-mapped IPv6 addresses and CIDRs (``::ffff:192.0.2.0/120``) are matched as IPv4.
Decisions are cached per address (bounded), so a busy client costs one dict look-up.
"""

from __future__ import annotations

import ipaddress

from propylon.filters.base import Filter, FilterContext, FilterEnv, LocalResponse
from propylon.policies.traffic import IpFilterPolicy

_CACHE_SIZE = 4096
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in ``text``: a bare IPv4 or IPv6 address, or one with a port as some
    proxies write it in X-Forwarded-For (``192.0.2.1:4711``, ``[2001:db8::1]:4711``,
    ``[2001:db8::1]``); None when there is none. Without this, a deny list behind such a
    proxy matched nobody."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]")
        if not bracket or (port and not (port[0] == ":" and port[1:].isdigit())):
            return None
    else:
        host, colon, port = text.partition(":")
        if not colon or not port.isdigit():
            return None
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return None
    if text.startswith("[") != isinstance(addr, ipaddress.IPv6Address):
        return None  # "[192.0.2.1]": not a form anyone writes
    return addr


def _network(cidr: str) -> Network:
    """The network of ``cidr``; an IPv4-mapped IPv6 one (``::ffff:192.0.2.0/120``) as the IPv4
    network it covers, since client addresses in that form are matched as IPv4."""
    net = ipaddress.ip_network(cidr, strict=False)
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, net.prefixlen - 96))
    return net


class IpFilter(Filter):
    policy_type = "ipFilter"
    settings_model = IpFilterPolicy

    __slots__ = ("allow", "decisions", "deny", "forbidden")

    def __init__(self, source: str, allow: tuple[Network, ...], deny: tuple[Network, ...]) -> None:
        super().__init__(source)
        self.allow = allow
        self.deny = deny
        self.decisions: dict[str, bool] = {}
        self.forbidden = LocalResponse(403, b"forbidden\n")

    @classmethod
    def from_spec(cls, settings: IpFilterPolicy, source: str, env: FilterEnv) -> IpFilter:
        allow = tuple(_network(c) for c in settings.allow)
        deny = tuple(_network(c) for c in settings.deny)
        return cls(source, allow, deny)

    def allowed(self, ip: str) -> bool:
        addr = parse_address(ip)
        if addr is None:
            return not self.allow
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if any(addr in net for net in self.deny):
            return False
        return not self.allow or any(addr in net for net in self.allow)

    def on_request(self, ctx: FilterContext) -> LocalResponse | None:
        ip = ctx.client_ip
        ok = self.decisions.get(ip)
        if ok is None:
            ok = self.allowed(ip)
            if len(self.decisions) >= _CACHE_SIZE:
                self.decisions.clear()
            self.decisions[ip] = ok
        return None if ok else self.forbidden
