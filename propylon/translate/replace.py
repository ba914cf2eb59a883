"""Invalid-route replacement: drafts -> served rules.

A draft whose owner (Route or RouteTable) is Invalid for this Gateway keeps its matches (those
that were themselves valid and lie under the delegating match) and hostnames but answers the
Gateway's ``invalid_route_response``, with ``replaced=True`` and no policies of its own (the
Gateway's ``default_policies`` apply to it); a replaced rule with no match left is dropped,
as it could never answer.

A served rule's ``policies`` are its own: the winners of its Route's, RouteTables' and rules'
levels, less the types an enforced Gateway-level section takes. The Gateway-level winners are
the Gateway's ``default_policies``, which every proxy adds for the types a rule has none of
(``ir.effective_policies``), so a change of the Gateway's policies that enforces nothing new
changes no rule.

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
    enforced: Level,
    targets: PolicyTargets,
) -> list[tuple[Draft, RuleIR]]:
    """The Gateway's rules, in order, each with the draft it comes from. ``enforced``: the
    Gateway-level candidates with ``enforced`` (the only ones a rule's own policies depend
    on)."""
    response = invalid_route_response(ctx)
    rules: list[tuple[Draft, RuleIR]] = []
    resource_levels: dict[str, Level] = {}
    scopes = ctx.scopes
    for draft in drafts:
        sections = scopes.get(draft.owner.ref, ()) if scopes else ()
        if ctx.is_invalid(draft.owner):
            if draft.matches:  # a rule left with no valid match could never answer
                rules.append((draft, replaced_rule(draft, response, sections)))
        elif draft.action is not None:
            levels = draft_levels(enforced, draft, targets, resource_levels,
                                  ctx.dumped_sections)
            policies: tuple[PolicyIR, ...] = ()
            if any(levels[1:]):
                policies = attach_policies(levels, ctx.status, ctx.gateway.key, own_only=True)
            rules.append((draft, _rule(draft, draft.action, policies, False, sections)))
    return rules


def replaced_rule(
    draft: Draft, response: DirectResponseIR, sections: tuple[str, ...]
) -> RuleIR:
    return _rule(draft, response, (), True, sections)


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
