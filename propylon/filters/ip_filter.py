"""The ``ipFilter`` policy: allow and deny CIDR lists on the real client IP.

``ctx.client_ip`` is the address after ``trustedProxies`` (the exchange resolves it before any
``on_request`` filter runs). A deny match wins; with an allow list, only matching addresses
pass. Rejections are ``403``. Decisions are cached per address (bounded), so a busy client
costs one dict look-up.
"""

from __future__ import annotations

import ipaddress

from propylon.filters.base import Filter, FilterContext, FilterEnv, LocalResponse
from propylon.policies.traffic import IpFilterPolicy

_CACHE_SIZE = 4096
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
        allow = tuple(ipaddress.ip_network(c, strict=False) for c in settings.allow)
        deny = tuple(ipaddress.ip_network(c, strict=False) for c in settings.deny)
        return cls(source, allow, deny)

    def allowed(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
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
