"""Typed settings of the built-in policy types: one pydantic model per policy section.

These models validate a section where it is written (YAML files, the admin API) and again
where a proxy compiles the IR (``propylon.filters.table``), and a filter is built from the
validated object, so a default lives in one place: the model. They import neither
``propylon.config`` nor the filters; which model belongs to which policy type, filter and
place in the order is said by the table in ``table.py``.
"""

from propylon.policies.auth import (
    ApiKeyPolicy,
    BasicAuthPolicy,
    ConsumerHeaders,
    ConsumerRestriction,
    ExtAuthPolicy,
    JwtPolicy,
)
from propylon.policies.headers import HeaderEdits, HeadersPolicy, HeadersSettings
from propylon.policies.traffic import (
    CorsPolicy,
    FaultInjectionPolicy,
    IpFilterPolicy,
    RateLimitPolicy,
    RequestLimitsPolicy,
)

__all__ = [
    "ApiKeyPolicy",
    "BasicAuthPolicy",
    "ConsumerHeaders",
    "ConsumerRestriction",
    "CorsPolicy",
    "ExtAuthPolicy",
    "FaultInjectionPolicy",
    "HeaderEdits",
    "HeadersPolicy",
    "HeadersSettings",
    "IpFilterPolicy",
    "JwtPolicy",
    "RateLimitPolicy",
    "RequestLimitsPolicy",
]
