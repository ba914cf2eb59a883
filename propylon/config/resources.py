"""The six resource kinds (DESIGN §2): ``apiVersion``, ``kind``, ``metadata`` and ``spec``.

A loaded resource remembers where it was defined (``source``); that is not part of its
content, so it never changes a translation's result.
"""

from __future__ import annotations

import functools
from typing import Literal

from pydantic import Field, PrivateAttr, model_validator

from propylon.config._types import Labels, Model, Name, invalid
from propylon.config.consumer import ConsumerSpec
from propylon.config.errors import Source
from propylon.config.gateway import GatewaySpec, ListenerSections
from propylon.config.policy import PolicySections
from propylon.config.route import RouteSpec, RouteTableSpec
from propylon.config.upstream import UpstreamSpec
from propylon.schema import TargetName

API_VERSION = "propylon.dev/v1"


class Metadata(Model):
    name: Name
    namespace: Name = "default"
    labels: Labels = Field(default_factory=dict)


class Resource(Model):
    api_version: Literal["propylon.dev/v1"]
    kind: str
    metadata: Metadata
    _source: Source | None = PrivateAttr(default=None)

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def name(self) -> str:
        return self.metadata.name

    # cached: translation asks each resource hundreds of thousands of times at 10,000 Routes
    # (resources are frozen; a cached value is not a field: not compared, hashed or dumped)
    @functools.cached_property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.metadata.namespace}/{self.metadata.name}"

    @functools.cached_property
    def ref(self) -> str:
        """``Kind namespace/name``, how statuses and messages name the resource."""
        return f"{self.kind} {self.key}"

    @property
    def source(self) -> Source | None:
        # not ``self._source``: pydantic's ``__getattr__`` finds a private attribute, four
        # times as slowly as this (0.1 s of ``validate`` at 10,000 Routes)
        return self.__pydantic_private__["_source"]  # type: ignore[index]


class Gateway(Resource):
    kind: Literal["Gateway"] = "Gateway"
    spec: GatewaySpec
    _sections: ListenerSections | None = PrivateAttr(default=None)  # conversion's only

    @property
    def sections(self) -> ListenerSections | None:
        """The routes served on some of its listeners only (a converted Gateway API
        Gateway's; ``ListenerSections``)."""
        return self.__pydantic_private__["_sections"]  # type: ignore[index]


class Route(Resource):
    kind: Literal["Route"] = "Route"
    spec: RouteSpec
    # Gateway key -> the listener sections this Route is served on there, when not all its
    # listeners (a converted Gateway API route; ``ListenerSections``); conversion's only
    _served_on: dict[str, tuple[str, ...]] | None = PrivateAttr(default=None)

    def served_on(self, gateway: str) -> tuple[str, ...]:
        """The sections of ``gateway``'s listeners this Route is served on; empty: all."""
        served = self.__pydantic_private__.get("_served_on")  # type: ignore[union-attr]
        return served.get(gateway, ()) if served else ()


class RouteTable(Resource):
    kind: Literal["RouteTable"] = "RouteTable"
    spec: RouteTableSpec


class Upstream(Resource):
    kind: Literal["Upstream"] = "Upstream"
    spec: UpstreamSpec


class TargetRef(Model):
    # HTTPRoute, GRPCRoute, Ingress: the Routes that Kubernetes object becomes (gatewayapi.py)
    kind: Literal["Gateway", "Route", "RouteTable", "Upstream", "HTTPRoute", "GRPCRoute",
                  "Ingress"]
    # a propylon.dev/v1 name, or the Kubernetes name a converted resource or rule keeps
    name: TargetName
    namespace: Name | None = None  # default: the Policy's own namespace
    section_name: TargetName | None = None  # a rule name of the target Route or RouteTable


class PolicySpec(PolicySections):
    target_refs: list[TargetRef] = Field(min_length=1)
    enforced: bool = False

    @model_validator(mode="after")
    def _not_empty(self) -> PolicySpec:
        if not self.sections():
            raise invalid("empty_policy", "a Policy needs at least one policy section")
        return self


class Policy(Resource):
    kind: Literal["Policy"] = "Policy"
    spec: PolicySpec


class Consumer(Resource):
    kind: Literal["Consumer"] = "Consumer"
    spec: ConsumerSpec


AnyResource = Gateway | Route | RouteTable | Upstream | Policy | Consumer

KINDS: dict[str, type[Resource]] = {
    cls.__name__: cls for cls in (Gateway, Route, RouteTable, Upstream, Policy, Consumer)
}
