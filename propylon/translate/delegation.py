"""Flattening a selected Route's rules, following delegation into RouteTables.

Every rule becomes a ``Draft``: its matches (nested under the delegating matches), its action
resolved, its id, and the chain of delegating drafts. Problems are reported against the rule's
owner through ``GatewayContext.fail``; whether a draft is served or replaced is decided after
the whole walk (``replace.py``), because a cycle found deep in the walk invalidates tables
whose rules were drafted earlier.

Order: a delegating rule's delegated drafts come right before it, RouteTables in key order.
Rule ids: ``route:shop/shop:3`` and, for delegated rules, the table's own id followed by
``@`` and the delegating rule's id: ``routetable:team-a/catalog:1@route:shop/shop:3``.
"""

from __future__ import annotations

from dataclasses import dataclass

from propylon.config import Route, RouteTable, Rule
from propylon.ir import Action, MatchIR
from propylon.ir.frozen import quicker_init
from propylon.translate.backends import build_action
from propylon.translate.context import GatewayContext, RouteLike
from propylon.translate.matches import build_matches, describe_path, nest_matches


@quicker_init  # tens of thousands per translation of a large configuration
@dataclass(frozen=True, slots=True)
class Draft:
    owner: RouteLike
    index: int
    rule: Rule
    id: str
    hostnames: tuple[str, ...]
    matches: tuple[MatchIR, ...]
    action: Action | None  # None for a delegating rule
    parents: tuple[Draft, ...] = ()  # delegating drafts, outermost first

    @property
    def label(self) -> str:
        """How policy sources name the rule: its name, else its index."""
        return self.rule.name or f"#{self.index}"


def flatten_route(ctx: GatewayContext, route: Route) -> list[Draft]:
    ctx.status.selected(route.kind, route.key, ctx.gateway.key)
    return _flatten_rules(ctx, route, tuple(route.spec.hostnames), None, ())


def _flatten_rules(
    ctx: GatewayContext,
    owner: RouteLike,
    hostnames: tuple[str, ...],
    parent: Draft | None,
    chain: tuple[RouteTable, ...],
) -> list[Draft]:
    drafts: list[Draft] = []
    for index, rule in enumerate(owner.spec.rules):
        draft = build_draft(ctx, owner, index, rule, hostnames, parent)
        if rule.delegate is not None:
            drafts.extend(resolve_delegation(ctx, draft, chain))
        drafts.append(draft)  # after its delegated rules, which it may stand behind
    return drafts


def build_draft(
    ctx: GatewayContext,
    owner: RouteLike,
    index: int,
    rule: Rule,
    hostnames: tuple[str, ...],
    parent: Draft | None,
) -> Draft:
    field = f"spec.rules[{index}]"
    own, errors = build_matches(rule.matches, field)
    for where, error in errors:
        ctx.fail(owner, error, field=where)
    matches = [m for _, m in own]
    if parent is not None:
        matches, escaping = nest_matches(parent.matches, own)
        for k, match in escaping:
            where = ", ".join(describe_path(m.path) for m in parent.matches)
            ctx.fail(
                owner,
                f"{describe_path(match.path)} is not under the delegating match "
                f"({where} of {parent.id})",
                field=f"{field}.matches[{k}].path",
            )
    own_id = f"{owner.kind.lower()}:{owner.key}:{index}"
    if parent is None:  # positional: a large configuration makes tens of thousands
        return Draft(owner, index, rule, own_id, hostnames, tuple(matches),
                     build_action(ctx, owner, rule, field))
    return Draft(owner, index, rule, f"{own_id}@{parent.id}", hostnames, tuple(matches),
                 build_action(ctx, owner, rule, field), (*parent.parents, parent))


def resolve_delegation(
    ctx: GatewayContext, draft: Draft, chain: tuple[RouteTable, ...]
) -> list[Draft]:
    """The drafts of every RouteTable ``draft``'s delegate selects, recursively."""
    assert draft.rule.delegate is not None
    if not draft.matches:
        return []  # its matches were all dropped: nothing can be delegated under them
    owner = draft.owner
    tables = ctx.route_tables().select(draft.rule.delegate.selector, owner.namespace)
    if ctx.tables_read is not None:
        ctx.tables_read += tables
    if not tables:
        ctx.status.note(
            owner.kind, owner.key, f"spec.rules[{draft.index}].delegate: selects no RouteTable"
        )
    drafts: list[Draft] = []
    for table in tables:
        if any(t.key == table.key for t in chain):
            _report_cycle(ctx, (*chain, table), (*draft.parents, draft))
            continue
        ctx.status.selected(table.kind, table.key, ctx.gateway.key)
        drafts.extend(_flatten_rules(ctx, table, draft.hostnames, draft, (*chain, table)))
    return drafts


def _report_cycle(
    ctx: GatewayContext, chain: tuple[RouteTable, ...], delegating: tuple[Draft, ...]
) -> None:
    """Every table of the cycle is Invalid, located at its rule that delegates onwards."""
    start = next(i for i, t in enumerate(chain) if t.key == chain[-1].key)
    cycle = chain[start:]
    text = " -> ".join(t.ref for t in cycle)
    for table in cycle[:-1]:
        rule = next((d for d in reversed(delegating) if d.owner.ref == table.ref), None)
        where = f"spec.rules[{rule.index}].delegate" if rule is not None else None
        ctx.fail(table, f"delegation cycle: {text}", field=where)
