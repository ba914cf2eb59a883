"""Configuration: resource models and YAML loading with source positions (DESIGN §2).

``load_paths`` / ``load_text`` / ``load_data`` give a ``LoadResult``: the valid resources and one
``ConfigError`` (with ``file:line``) per problem found, all of them at once, and the documents
that name a resource but fail (``rejected``), which ``recover`` turns into what standalone
mode can still serve of them.
"""

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
