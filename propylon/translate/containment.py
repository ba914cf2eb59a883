"""Containment: one team's invalid resource never takes another team's traffic down, and a
broken policy never lets traffic through unenforced (DESIGN §2 "Invalid route replacement").

Resources that failed validation come from the loader as ``Rejected`` documents. Before the
Gateways are translated (``plan_containment``):

1. each rejected resource is Invalid, its status carrying every validation error;
2. what can be recovered of it stands in for it (``config.recover``; for a resource also
   defined validly elsewhere, that first definition): a Route's or RouteTable's rules are
   replaced on every Gateway (they answer its ``invalidRouteResponse``), a Gateway is
   disabled; a rejected Upstream or Consumer is left out (rules forwarding to that Upstream
   are then invalid themselves; that Consumer's credentials open nothing);
3. a rejected Policy fails its targets closed: the Routes and RouteTables it targets are
   replaced, the Gateways it targets disabled. When its ``targetRefs`` cannot be read, what
   it protected is unknown, so every Gateway, Route and RouteTable of its namespace is.
   An invalid HTTPRoute, GRPCRoute or Ingress (rejected, or whose Route does not validate)
   has Routes standing in for it already, made by conversion (``config/gatewayapi.py``,
   ``stand_ins``): they are replaced as a Route is.

After Policy targets are resolved (``unattached_gateway_policies``):

4. a valid Policy of a Gateway's own namespace that targets the Gateway but could not be
   attached to it disables that Gateway. A Policy of another namespace never can: a team
   cannot take a Gateway down.

A disabled Gateway keeps its listeners and answers every request with 503
(``DISABLED_RESPONSE``): it fails closed instead of serving without its policies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from propylon.config import (
    ConfigError,
    Policy,
    Rejected,
    Resource,
    TargetRef,
    recover,
    recover_target_refs,
)
from propylon.config.loader import DEFINED_TWICE
from propylon.ir import DirectResponseIR, GatewayIR, ListenerIR, MatchIR, RuleIR
from propylon.translate.inventory import Inventory
from propylon.translate.policies import ConvertedRoutes, PolicyTargets, target_keys
from propylon.translate.status import StatusBook

DISABLED_RESPONSE = DirectResponseIR(503, "gateway unavailable")
_STANDS_IN = frozenset({"Gateway", "Route", "RouteTable"})
_POLICY_TARGETS = frozenset({"Gateway", "Route", "RouteTable"})
_REPLACED = "its rules answer the invalid route response until it is fixed"
_DISABLED = "the Gateway is disabled (its listeners answer 503) until it is fixed"
_NOTHING = "left out: nothing of it can be served safely"
_LEFT_OUT = {
    "Upstream": "left out: the rules forwarding to it are invalid until it is fixed",
    "Consumer": "left out: its credentials open nothing until it is fixed",
}


@dataclass(slots=True)
class Containment:
    resources: list[Resource]  # what translation gets: valid resources and stand-ins
    rejected: dict[str, Rejected] = field(default_factory=dict)  # by ref, first of each
    # the definitions after the first of a ref already rejected: their errors reported too
    again: list[Rejected] = field(default_factory=list)
    replaced: set[str] = field(default_factory=set)  # Route/RouteTable refs
    disabled: dict[str, str] = field(default_factory=dict)  # Gateway key -> reason
    # (kind, key, reason): resources failed closed because of another one
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    # (kind, key, reason): what became of a rejected resource
    notes: list[tuple[str, str, str]] = field(default_factory=list)


def disabled_gateway(key: str, listeners: tuple[ListenerIR, ...]) -> GatewayIR:
    """A Gateway failing closed: its listeners, and one rule answering every request 503."""
    rule = RuleIR(
        id=f"gateway:{key}:disabled",
        route=f"Gateway {key}",
        name=None,
        hostnames=(),
        matches=(MatchIR(),),
        action=DISABLED_RESPONSE,
        replaced=True,
    )
    return GatewayIR(key, listeners, (rule,), (), invalid_route_response=DISABLED_RESPONSE)


def plan_containment(
    resources: Sequence[Resource], rejected: Sequence[Rejected],
    stand_ins: Mapping[str, Sequence[str]] | None = None,
    converted: ConvertedRoutes | None = None,
) -> Containment:
    """Steps 1-3 of the module doc, without a status book yet (see ``record_containment``).
    ``stand_ins``: the refs of the Routes conversion made to stand in for each invalid
    Kubernetes object (``Expansion.replaced``); ``converted``: the keys of the Routes each
    route object became (``Expansion.converted_routes``), which a rejected Policy's targetRef
    of its kind and name protects."""
    first: dict[str, Rejected] = {}
    again: list[Rejected] = []
    for item in rejected:
        if first.setdefault(item.ref, item) is not item:
            again.append(item)
    plan = Containment([r for r in resources if r.ref not in first], first, again=again)
    defined = {r.ref: r for r in resources}
    known = {*defined, *first}
    for ref, routes in (stand_ins or {}).items():
        plan.replaced.update(routes)
        kind, key = ref.split(" ", 1)
        plan.notes.append((kind, key, _REPLACED))
    for ref, item in first.items():
        if stand_ins and ref in stand_ins:
            continue  # its Routes are replaced (above)
        stand_in = (defined.get(ref) or recover(item)) if item.kind in _STANDS_IN else None
        if item.kind == "Policy":
            _fail_targets_closed(plan, item, defined.get(ref), resources, known,
                                 converted or {})
        elif stand_in is None:
            plan.notes.append((item.kind, item.key, _LEFT_OUT.get(item.kind, _NOTHING)))
        elif item.kind == "Gateway":
            plan.resources.append(stand_in)
            plan.disabled[item.key] = _DISABLED
            plan.notes.append((item.kind, item.key, _DISABLED))
        else:
            plan.resources.append(stand_in)
            plan.replaced.add(ref)
            plan.notes.append((item.kind, item.key, _REPLACED))
    return plan


def record_containment(plan: Containment, status: StatusBook) -> None:
    """Every rejected resource Invalid with its errors (those of each of its definitions);
    every resource failed closed because of another one Invalid with the reason."""
    for item in (*plan.rejected.values(), *plan.again):
        status.reject(item.kind, item.key, item.errors, [_reason(e) for e in item.errors])
    for kind, key, reason in plan.failed:
        status.fail(kind, key, reason)
    for kind, key, reason in plan.notes:
        status.note(kind, key, reason)


def _reason(error: ConfigError) -> str:
    # a second definition's error names both places; a status never depends on where a
    # resource was written (nor, then, does the IR's version)
    if error.message.startswith(DEFINED_TWICE):
        return DEFINED_TWICE
    return f"{error.field}: {error.message}" if error.field else error.message


def unattached_gateway_policies(
    inventory: Inventory, targets: PolicyTargets, status: StatusBook
) -> dict[str, str]:
    """Step 4: Gateway key -> reason, for each Gateway one of its own namespace's Policies
    targets but could not be attached to (that Policy's status says why)."""
    disabled: dict[str, str] = {}
    for policy in inventory.policies:
        for ref in policy.spec.target_refs:
            key = f"{policy.namespace}/{ref.name}"
            if ref.kind != "Gateway" or ref.namespace not in (None, policy.namespace):
                continue
            attached = targets.get(("Gateway", key, None), [])
            if inventory.find("Gateway", key) is None or policy in attached:
                continue
            reason = f"Policy {policy.key} targeting it is invalid: {_DISABLED}"
            disabled[key] = reason
            status.fail("Gateway", key, reason)
    return disabled


def _fail_targets_closed(
    plan: Containment, policy: Rejected, defined: Resource | None,
    resources: Sequence[Resource], known: set[str], converted: ConvertedRoutes,
) -> None:
    refs = defined.spec.target_refs if isinstance(defined, Policy) else recover_target_refs(
        policy)
    namespace = policy.key.split("/", 1)[0]
    reason = f"Policy {policy.key} targeting it is invalid: "
    for kind, key in _protected(refs, namespace, resources, converted):
        if f"{kind} {key}" not in known:
            continue
        if kind == "Gateway":
            plan.disabled[key] = reason + _DISABLED
            plan.failed.append((kind, key, reason + _DISABLED))
        else:
            plan.replaced.add(f"{kind} {key}")
            plan.failed.append((kind, key, reason + _REPLACED))
    if refs is None:
        plan.notes.append(("Policy", policy.key, "its targetRefs cannot be read: every Gateway,"
                           f" Route and RouteTable of namespace {namespace} fails closed"))


def _protected(
    refs: Iterable[TargetRef] | None, namespace: str, resources: Sequence[Resource],
    converted: ConvertedRoutes,
) -> list[tuple[str, str]]:
    """(kind, key) of what a Policy of ``namespace`` with ``refs`` attaches to (None: every
    Gateway, Route and RouteTable of the namespace; a route object's ref: its Routes)."""
    if refs is None:
        found = {(r.kind, r.key) for r in resources
                 if r.kind in _POLICY_TARGETS and r.namespace == namespace}
        return sorted(found)
    return sorted({
        (kind, key)
        for ref in refs if ref.namespace in (None, namespace)
        for kind, key in target_keys(ref.kind, f"{namespace}/{ref.name}", converted)
        if kind in _POLICY_TARGETS
    })
