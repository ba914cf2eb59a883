"""Which filter class implements each policy type (names as in ``propylon.ir.POLICY_ORDER``)."""

from __future__ import annotations

from propylon.filters.api_key import ApiKeyFilter
from propylon.filters.base import Filter
from propylon.filters.basic_auth import BasicAuthFilter
from propylon.filters.cors import CorsFilter
from propylon.filters.ext_auth import ExtAuthFilter
from propylon.filters.fault_injection import FaultInjectionFilter
from propylon.filters.headers import HeadersFilter
from propylon.filters.ip_filter import IpFilter
from propylon.filters.jwt_auth import JwtFilter
from propylon.filters.rate_limit import RateLimitFilter
from propylon.filters.request_limits import RequestLimitsFilter

FILTER_CLASSES: dict[str, type[Filter]] = {
    cls.policy_type: cls
    for cls in (
        IpFilter,
        CorsFilter,
        JwtFilter,
        ApiKeyFilter,
        BasicAuthFilter,
        ExtAuthFilter,
        RateLimitFilter,
        RequestLimitsFilter,
        HeadersFilter,
        FaultInjectionFilter,
    )
}


def filter_class(policy_type: str) -> type[Filter]:
    cls = FILTER_CLASSES.get(policy_type)
    if cls is None:
        raise ValueError(f'policy "{policy_type}" is not supported yet')
    return cls
