"""The ``ipFilter`` policy: allow and deny CIDR lists on the real client IP.

``ctx.client_ip`` is the address after ``trustedProxies`` (the exchange resolves it before any
``on_request`` filter runs). A deny match wins; with an allow list, only matching addresses
pass. Rejections are ``403``. The address is read as an X-Forwarded-For hop is
(``net.addresses.hop_address``: without a port, an IPv4-mapped IPv6 address as IPv4), so a
peer's or a PROXY header's address is matched as a forwarded one; IPv4-mapped CIDRs
(``::ffff:192.0.2.0/120``) are matched as IPv4.
Decisions are cached per address (bounded), so a busy client costs one dict look-up.
"""

from __future__ import annotations

import ipaddress

from propylon.filters.base import Filter, FilterContext, FilterEnv, LocalResponse
from propylon.net.addresses import hop_address
from propylon.policies.traffic import IpFilterPolicy

_CACHE_SIZE = 4096
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
        address = hop_address(ip)
        if address is None:
            return not self.allow
        addr = ipaddress.ip_address(address)
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
