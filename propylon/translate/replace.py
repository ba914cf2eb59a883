"""Invalid-route replacement: drafts -> served rules.

A draft whose owner (Route or RouteTable) is Invalid for this Gateway keeps its matches (those
that were themselves valid and lie under the delegating match) and hostnames but answers the
Gateway's ``invalid_route_response``, with ``replaced=True`` and only the Gateway-level
policies; a replaced rule with no match left is dropped, as it could never answer.

A rule of a Route served on some of the Gateway's listeners only (a Gateway API route bound
by ``sectionName`` or ``port``) carries their sections, replaced or not (``ctx.scopes``).

A delegating rule is not served itself. When its owner is Invalid it stands in as a replaced
rule placed after its delegated rules, whose RouteTables are judged on their own: one team's
mistake never takes another team's rules down.
"""

from __future__ import annotations

from collections.abc import Sequence

from propylon.ir import Action, DirectResponseIR, PolicyIR, RuleIR
from propylon.translate.context import GatewayContext
from propylon.translate.delegation import Draft
from propylon.translate.policies import Level, PolicyTargets, attach_policies, draft_levels


def build_rules(
    ctx: GatewayContext,
    drafts: Sequence[Draft],
    gateway_policies: Level,
    targets: PolicyTargets,
    default_policies: tuple[PolicyIR, ...],
) -> list[tuple[Draft, RuleIR]]:
    """The Gateway's rules, in order, each with the draft it comes from."""
    response = invalid_route_response(ctx)
    rules: list[tuple[Draft, RuleIR]] = []
    resource_levels: dict[str, Level] = {}
    # with only the Gateway's inline sections as candidates, a rule's policies are the
    # Gateway's defaults (attaching them reports nothing), as objects of its own: a compiled
    # rule's filters are its own, found by the identity of its policies (runtime/chain_memo.py)
    inline_only = all(c.policy is None for c in gateway_policies)
    scopes = ctx.scopes
    for draft in drafts:
        sections = scopes.get(draft.owner.ref, ()) if scopes else ()
        if ctx.is_invalid(draft.owner):
            if draft.matches:  # a rule left with no valid match could never answer
                rules.append((draft, replaced_rule(draft, response, default_policies,
                                                   sections)))
        elif draft.action is not None:
            levels = draft_levels(gateway_policies, draft, targets, resource_levels,
                                  ctx.dumped_sections)
            if inline_only and not any(levels[1:]):
                policies = tuple([PolicyIR(p.type, p.spec, p.source) for p in default_policies])
            else:
                policies = attach_policies(levels, ctx.status, ctx.gateway.key)
            rules.append((draft, _rule(draft, draft.action, policies, False, sections)))
    return rules


def replaced_rule(
    draft: Draft, response: DirectResponseIR, policies: tuple[PolicyIR, ...],
    sections: tuple[str, ...],
) -> RuleIR:
    return _rule(draft, response, policies, True, sections)


def invalid_route_response(ctx: GatewayContext) -> DirectResponseIR:
    spec = ctx.gateway.spec.invalid_route_response
    return DirectResponseIR(spec.status, spec.body)


def _rule(
    draft: Draft,
    action: Action,
    policies: tuple[PolicyIR, ...],
    replaced: bool,
    sections: tuple[str, ...],
) -> RuleIR:
    """``sections``: the listener sections it is served on (empty: every listener)."""
    parents = draft.parents
    return RuleIR(draft.id, draft.owner.ref, draft.rule.name, draft.hostnames, draft.matches,
                  action, policies, tuple([p.id for p in parents]) if parents else (), replaced,
                  sections)
