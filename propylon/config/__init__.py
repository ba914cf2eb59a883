"""Configuration: resource models and YAML loading with source positions (DESIGN §2).

``load_paths`` / ``load_text`` / ``load_data`` give a ``LoadResult``: the valid resources and one
``ConfigError`` (with ``file:line``) per problem found, all of them at once, and the documents
that name a resource but fail (``rejected``), which ``recover`` turns into what standalone
mode can still serve of them.

The names below are imported when first used (PEP 562): parsing YAML
(``config._yaml``, ``config.parse_pool``) needs none of the resource models, whose pydantic
schemas take a fifth of a second to build, so a command can start parsing files before it has
them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from propylon.config._types import Selector
    from propylon.config.consumer import (
        ApiKeyCredential,
        BasicAuthCredential,
        ConsumerSpec,
        Credentials,
        SecretRef,
    )
    from propylon.config.duration import parse_duration
    from propylon.config.errors import ConfigError, Source
    from propylon.config.gateway import GatewaySpec, InvalidRouteResponse, Listener
    from propylon.config.loader import LoadResult, Rejected, load_data, load_paths, load_text
    from propylon.config.policy import (
        GatewayPolicyItem,
        HeaderEdits,
        HeadersPolicy,
        PolicyItem,
        PolicySections,
    )
    from propylon.config.recovery import recover, recover_target_refs
    from propylon.config.resources import (
        API_VERSION,
        KINDS,
        AnyResource,
        Consumer,
        Gateway,
        Metadata,
        Policy,
        PolicySpec,
        Resource,
        Route,
        RouteTable,
        TargetRef,
        Upstream,
    )
    from propylon.config.route import (
        Backend,
        Delegate,
        DirectResponse,
        Forward,
        Match,
        PathMatch,
        Redirect,
        Rewrite,
        RouteSpec,
        RouteTableSpec,
        Rule,
        ValueMatch,
    )
    from propylon.config.upstream import (
        ConnectionPool,
        Endpoint,
        HashOn,
        LoadBalancer,
        UpstreamSpec,
    )

_WHERE: dict[str, str] = {
    "Selector": "propylon.config._types",
    "ApiKeyCredential": "propylon.config.consumer",
    "BasicAuthCredential": "propylon.config.consumer",
    "ConsumerSpec": "propylon.config.consumer",
    "Credentials": "propylon.config.consumer",
    "SecretRef": "propylon.config.consumer",
    "parse_duration": "propylon.config.duration",
    "ConfigError": "propylon.config.errors",
    "Source": "propylon.config.errors",
    "GatewaySpec": "propylon.config.gateway",
    "InvalidRouteResponse": "propylon.config.gateway",
    "Listener": "propylon.config.gateway",
    "LoadResult": "propylon.config.loader",
    "Rejected": "propylon.config.loader",
    "load_data": "propylon.config.loader",
    "load_paths": "propylon.config.loader",
    "load_text": "propylon.config.loader",
    "GatewayPolicyItem": "propylon.config.policy",
    "HeaderEdits": "propylon.config.policy",
    "HeadersPolicy": "propylon.config.policy",
    "PolicyItem": "propylon.config.policy",
    "PolicySections": "propylon.config.policy",
    "recover": "propylon.config.recovery",
    "recover_target_refs": "propylon.config.recovery",
    "API_VERSION": "propylon.config.resources",
    "KINDS": "propylon.config.resources",
    "AnyResource": "propylon.config.resources",
    "Consumer": "propylon.config.resources",
    "Gateway": "propylon.config.resources",
    "Metadata": "propylon.config.resources",
    "Policy": "propylon.config.resources",
    "PolicySpec": "propylon.config.resources",
    "Resource": "propylon.config.resources",
    "Route": "propylon.config.resources",
    "RouteTable": "propylon.config.resources",
    "TargetRef": "propylon.config.resources",
    "Upstream": "propylon.config.resources",
    "Backend": "propylon.config.route",
    "Delegate": "propylon.config.route",
    "DirectResponse": "propylon.config.route",
    "Forward": "propylon.config.route",
    "Match": "propylon.config.route",
    "PathMatch": "propylon.config.route",
    "Redirect": "propylon.config.route",
    "Rewrite": "propylon.config.route",
    "RouteSpec": "propylon.config.route",
    "RouteTableSpec": "propylon.config.route",
    "Rule": "propylon.config.route",
    "ValueMatch": "propylon.config.route",
    "ConnectionPool": "propylon.config.upstream",
    "Endpoint": "propylon.config.upstream",
    "HashOn": "propylon.config.upstream",
    "LoadBalancer": "propylon.config.upstream",
    "UpstreamSpec": "propylon.config.upstream",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


__all__ = [
    "API_VERSION",
    "KINDS",
    "AnyResource",
    "ApiKeyCredential",
    "Backend",
    "BasicAuthCredential",
    "ConfigError",
    "ConnectionPool",
    "Consumer",
    "ConsumerSpec",
    "Credentials",
    "Delegate",
    "DirectResponse",
    "Endpoint",
    "Forward",
    "Gateway",
    "GatewayPolicyItem",
    "GatewaySpec",
    "HashOn",
    "HeaderEdits",
    "HeadersPolicy",
    "InvalidRouteResponse",
    "Listener",
    "LoadBalancer",
    "LoadResult",
    "Match",
    "Metadata",
    "PathMatch",
    "Policy",
    "PolicyItem",
    "PolicySections",
    "PolicySpec",
    "Redirect",
    "Rejected",
    "Resource",
    "Rewrite",
    "Route",
    "RouteSpec",
    "RouteTable",
    "RouteTableSpec",
    "Rule",
    "SecretRef",
    "Selector",
    "Source",
    "TargetRef",
    "Upstream",
    "UpstreamSpec",
    "ValueMatch",
    "load_data",
    "load_paths",
    "load_text",
    "parse_duration",
    "recover",
    "recover_target_refs",
]
