"""Policy attachment and precedence.

Candidates for a rule, grouped in levels from least to most specific:

1. the Gateway: its inline ``policies[]``, then Policy resources targeting it;
2. the resources on the rule's path: the Route, then each RouteTable down to the rule's owner
   (Policy resources targeting them without ``sectionName``);
3. each delegating rule, outermost first (its inline ``policies[]``, then Policy resources
   targeting its resource with ``sectionName`` = the rule's name);
4. the rule itself (same sources as 3).

Per policy type the most specific level wins, except that a Gateway-level section with
``enforced: true`` wins over everything. Within a level the first candidate wins (inline
first, then Policy resources by namespace/name); a Policy resource that loses at its own level,
or to an enforced section, gets "<type> overridden by <winner>" in its status.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from propylon.config import (
    Gateway,
    Policy,
    PolicySections,
    Resource,
    Route,
    RouteTable,
    SecretRef,
)
from propylon.ir import PolicyIR
from propylon.ir.frozen import quicker_init
from propylon.policies.plugins import policy_types
from propylon.translate.consumers import SecretError, read_secret
from propylon.translate.context import DumpedSections, RouteLike
from propylon.translate.delegation import Draft
from propylon.translate.inventory import Inventory
from propylon.translate.paths import resolve_path
from propylon.translate.status import StatusBook

# (target kind, target key, sectionName or None) -> Policies in namespace/name order
PolicyTargets = dict[tuple[str, str, str | None], list[Policy]]
# a route object's ref ("GRPCRoute shop/api") -> the keys of the Routes it became
# (``Expansion.converted_routes``): a targetRef of its kind and name attaches to them; and
# "Route shop/api", a Route's former name no Route has now -> the Route it was
ConvertedRoutes = Mapping[str, Sequence[str]]
KUBERNETES_ROUTE_KINDS = frozenset({"HTTPRoute", "GRPCRoute", "Ingress"})
# The policy types that may target an Upstream (none are implemented yet).
UPSTREAM_POLICY_TYPES: frozenset[str] = frozenset()


@quicker_init  # tens of thousands per translation of a large configuration
@dataclass(frozen=True, slots=True)
class Candidate:
    type: str
    spec: dict[str, Any]
    source: str
    enforced: bool = False
    policy: str | None = None  # the Policy resource's key, when it comes from one


Level = list[Candidate]


def index_policy_targets(inventory: Inventory, status: StatusBook,
                         converted: ConvertedRoutes | None = None) -> PolicyTargets:
    """Resolve every Policy's targetRefs; a missing target or bad ref makes the Policy Invalid
    (its other, valid targets still get it). A ref of kind HTTPRoute, GRPCRoute or Ingress
    attaches to the Routes that object became (``converted``, ``target_keys``).

    A Policy only attaches to resources of its own namespace (the Gateway API's policy
    attachment rule): a ref naming another namespace is refused before the target is even
    looked up, so a team can neither change nor probe another team's resources, and a
    Gateway's policies (``enforced`` ones included) come only from its own namespace."""
    targets: PolicyTargets = {}
    converted = converted or {}
    for policy in inventory.policies:
        for index, ref in enumerate(policy.spec.target_refs):
            if ref.namespace is not None and ref.namespace != policy.namespace:
                status.fail(policy.kind, policy.key, _OTHER_NAMESPACE.format(
                    policy.namespace, ref.kind, ref.namespace, ref.name),
                    field=f"spec.targetRefs[{index}].namespace")
                continue
            key = f"{policy.namespace}/{ref.name}"
            found = target_keys(ref.kind, key, converted)
            error = _refs_error(inventory, policy, ref.kind, key, ref.section_name, found)
            if error:
                status.fail(policy.kind, policy.key, error, field=f"spec.targetRefs[{index}]")
                continue
            if ref.kind == "Route" and f"Route {key}" in converted:
                status.warn(policy.kind, policy.key, _FORMER_NAME.format(
                    key, ", ".join(target for _, target in found)),
                    field=f"spec.targetRefs[{index}]")
            for kind, target in found:
                targets.setdefault((kind, target, ref.section_name), []).append(policy)
            if policy.spec.enforced and ref.kind != "Gateway":
                status.note(policy.kind, policy.key, "enforced only applies to Gateway targets")
    return targets


_OTHER_NAMESPACE = ("a Policy may only target resources of its own namespace ({}): "
                    "{} {}/{} is in another namespace")
_FORMER_NAME = ("Route {} is the former name of Route {} (a GRPCRoute's or an Ingress's Routes "
                "are named by kind now): attached to it; target the object by its kind and "
                "name instead ({{kind: GRPCRoute|Ingress, name: NAME}})")


def target_keys(kind: str, key: str, converted: ConvertedRoutes) -> list[tuple[str, str]]:
    """(kind, key) of what a targetRef of ``kind`` and ``key`` names: that resource, or the
    Routes the route object (HTTPRoute, GRPCRoute, Ingress) became, none when it became none
    (attached to no Gateway of ours, of another class); a Route's former name, the Route it
    was (``ConvertedRoutes``)."""
    if kind == "Route":
        former = converted.get(f"Route {key}")
        return [(kind, key)] if former is None else [("Route", route) for route in former]
    if kind not in KUBERNETES_ROUTE_KINDS:
        return [(kind, key)]
    return [("Route", route) for route in converted.get(f"{kind} {key}", ())]


def _refs_error(
    inventory: Inventory, policy: Policy, kind: str, key: str, section: str | None,
    found: list[tuple[str, str]],
) -> str | None:
    if not found:
        return (f"{kind} {key} not found, or it becomes no Route (attached to no Gateway of "
                "ours; an Ingress of another class)")
    if kind == "Ingress" and section is not None:
        return "sectionName is not allowed for Ingress targets (an Ingress's rules have no names)"
    errors = (_target_error(inventory, policy, k, target, section) for k, target in found)
    return next((error for error in errors if error), None)


def _target_error(
    inventory: Inventory, policy: Policy, kind: str, key: str, section: str | None
) -> str | None:
    target = inventory.find(kind, key)
    if target is None:
        return f"{kind} {key} not found"
    if kind == "Upstream":
        bad = [t for t, _ in policy.spec.sections() if t not in UPSTREAM_POLICY_TYPES]
        if bad:
            return f"{bad[0]} cannot target an Upstream"
    if section is None:
        return None
    if kind not in ("Route", "RouteTable"):
        return "sectionName is only allowed for Route and RouteTable targets"
    assert isinstance(target, Route | RouteTable)
    names = {rule.name for rule in target.spec.rules}
    return None if section in names else f'{kind} {key} has no rule named "{section}"'


def _candidates(
    sections: PolicySections, source: str, enforced: bool, policy: str | None,
    owner: Resource | None = None, dumped: DumpedSections | None = None,
) -> Level:
    suffix = " (enforced)" if enforced else ""
    return [
        Candidate(name, spec, source + suffix, enforced, policy)
        for name, spec in _specs(sections, owner, dumped)
    ]


def _specs(
    sections: PolicySections, owner: Resource | None, dumped: DumpedSections | None
) -> list[tuple[str, dict[str, Any]]]:
    """Each section's spec; the same objects for an item already in ``dumped`` (specs are
    never changed once made)."""
    if dumped is not None:
        known = dumped.get(id(sections))
        if known is not None and known[0] is sections:
            return known[1]
    specs: list[tuple[str, dict[str, Any]]] = []
    own = False
    for name, section in sections.sections():
        spec, mine = _spec(name, section, owner)
        specs.append((name, spec))
        own = own or mine
    if dumped is not None and not own:
        dumped[id(sections)] = (sections, specs)
    return specs


def _spec(
    name: str, section: BaseModel, owner: Resource | None
) -> tuple[dict[str, Any], bool]:
    """The section's spec, and whether it depends on ``owner`` (secrets and CA files are
    read relative to the file defining it)."""
    spec: dict[str, Any] = section.model_dump(mode="json", by_alias=True)
    if name == "headers":
        if _has_secret_refs(spec):
            resolve_header_secrets(spec, _base_dir(owner),
                                   needed_by=owner.ref if owner is not None else "")
            return spec, True
    elif name in ("rateLimit", "cache"):
        redis = spec.get("redis") or {}
        if redis.get("password") is not None:
            where = f"{owner.ref} " if owner is not None else ""
            redis["password"] = _secret_value(redis["password"], _base_dir(owner),
                                              f"{where}{name}.redis.password")
            return spec, True
    elif owner is not None:
        # TLS CA files, like an Upstream's, are relative to the file defining the resource
        tls_holder = spec if name == "extAuth" else spec.get("jwks") if name == "jwt" else None
        if tls_holder and tls_holder.get("caFile"):
            tls_holder["caFile"] = resolve_path(tls_holder["caFile"], owner)
            return spec, True
    return spec, False


def _base_dir(owner: Resource | None) -> str | None:
    """The folder secret files are relative to: the defining file's."""
    base = owner.source.file if owner is not None and owner.source is not None else None
    return os.path.dirname(os.path.abspath(base)) if base else None


def _secret_value(value: dict[str, Any], base_dir: str | None, needed_by: str,
                  prefix: str = "") -> dict[str, Any]:
    """A written ``{secretRef}`` as the IR carries it: ``{"secret": value}`` (redacted in
    every admin answer), or ``{"secretError": reason}`` for the policy to fail as it must."""
    ref = SecretRef.model_validate(value["secretRef"])
    try:
        return {"secret": prefix + read_secret(ref, base_dir, needed_by=needed_by)}
    except SecretError as exc:
        return {"secretError": str(exc)}


def _has_secret_refs(spec: dict[str, Any]) -> bool:
    """Whether a header value of ``spec`` names a secret (what ``resolve_header_secrets``
    replaces)."""
    return any(isinstance(value, dict) and "secretRef" in value
               for edits in spec.values() for op in ("set", "add")
               for value in ((edits or {}).get(op) or {}).values())


def resolve_header_secrets(
    spec: dict[str, Any], base_dir: str | None, *, needed_by: str = ""
) -> None:
    """Replace ``{secretRef, prefix}`` header values with ``{"secret": value}`` (redacted in
    every admin answer), or ``{"secretError": reason}`` so the filter fails closed."""
    for direction, edits in spec.items():
        for op in ("set", "add"):
            values = (edits or {}).get(op) or {}
            for header, value in values.items():
                if isinstance(value, dict) and "secretRef" in value:
                    where = f"{needed_by} headers {direction}.{op}.{header}".strip()
                    values[header] = _secret_value(value, base_dir, where,
                                                   value.get("prefix", ""))


def _targeting(
    targets: PolicyTargets, kind: str, key: str, section: str | None, target: str
) -> Level:
    return [
        c
        for p in targets.get((kind, key, section), [])
        for c in _candidates(p.spec, f"Policy {p.key} -> {target}", False, p.key, p)
    ]


def gateway_level(gateway: Gateway, targets: PolicyTargets) -> Level:
    level: Level = []
    for item in gateway.spec.policies:
        level += _candidates(item, gateway.ref, item.enforced, None, gateway)
    for p in targets.get(("Gateway", gateway.key, None), []):
        level += _candidates(
            p.spec, f"Policy {p.key} -> {gateway.ref}", p.spec.enforced, p.key, p
        )
    return level


def resource_level(owner: RouteLike, targets: PolicyTargets) -> Level:
    return _targeting(targets, owner.kind, owner.key, None, owner.ref)


def rule_level(
    draft: Draft, targets: PolicyTargets, dumped: DumpedSections | None = None
) -> Level:
    owner, rule = draft.owner, draft.rule
    if not rule.policies and rule.name is None:
        return []
    where = f"{owner.ref} rule {draft.label}"
    level: Level = []
    for item in rule.policies:
        level += _candidates(item, where, False, None, owner, dumped)
    if rule.name is not None:
        level += _targeting(targets, owner.kind, owner.key, rule.name, where)
    return level


def draft_levels(
    gateway: Level, draft: Draft, targets: PolicyTargets,
    resource_levels: dict[str, Level] | None = None, dumped: DumpedSections | None = None,
) -> list[Level]:
    """The levels of ``draft``; ``resource_levels`` keeps each resource's level for the next
    draft of the same build (a Route's rules all have its level), ``dumped`` the specs of
    the policy items met (``_specs``)."""
    known = {} if resource_levels is None else resource_levels
    if not draft.parents:  # a Route's own rule: one resource, one rule
        owner = draft.owner
        level = known.get(owner.ref)
        if level is None:
            level = known[owner.ref] = resource_level(owner, targets)
        return [gateway, level, rule_level(draft, targets, dumped)]
    path = (*draft.parents, draft)
    owners = {d.owner.ref: d.owner for d in path}  # outermost first
    levels = [gateway]
    for ref, owner in owners.items():
        level = known.get(ref)
        if level is None:
            level = known[ref] = resource_level(owner, targets)
        levels.append(level)
    levels += [rule_level(d, targets, dumped) for d in path]
    return levels


def attach_policies(
    levels: Sequence[Level], status: StatusBook, gateway: str, *, own_only: bool = False
) -> tuple[PolicyIR, ...]:
    """The winning policy of each type, in the table's order (``policy_types().rank``:
    plugins included); losers' statuses updated. ``own_only``: without the winners of the
    first level (a rule's: those of the Gateway, its ``default_policies``)."""
    if not any(levels):
        return ()
    winners = choose_winners(levels)
    for level in levels:
        for cand in level:
            if cand.policy is not None:
                status.selected("Policy", cand.policy, gateway)
                _record_override(cand, level, winners[cand.type], status)
    table = policy_types()
    chosen: Iterable[Candidate] = winners.values()
    if own_only and levels[0]:
        first = levels[0]
        chosen = [c for c in chosen if not any(c is g for g in first)]
    ordered = sorted(chosen, key=lambda c: table.rank(c.type))
    return tuple(PolicyIR(c.type, c.spec, c.source) for c in ordered)


def choose_winners(levels: Sequence[Level]) -> dict[str, Candidate]:
    winners: dict[str, Candidate] = {}
    for cand in levels[0] if levels else []:
        if cand.enforced:
            winners.setdefault(cand.type, cand)
    for level in reversed(levels):
        for cand in level:
            winners.setdefault(cand.type, cand)
    return winners


def _record_override(cand: Candidate, level: Level, winner: Candidate, status: StatusBook) -> None:
    if cand is winner or cand.policy is None:
        return
    if winner.enforced or any(c is winner for c in level):
        status.note("Policy", cand.policy, f"{cand.type} overridden by {winner.source}")
