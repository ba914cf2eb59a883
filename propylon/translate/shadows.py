"""Shadowed rules: a warning for each rule that can never answer on a Gateway because, for
every request it matches, another rule is chosen first.

The router decides that (``runtime.router.shadowed``, from the same precedence ``match``
applies), given the Gateway's rules as the proxy will compile them: one entry per match, in
rule order. A rule is reported when all its matches are shadowed by other rules' matches; the
warning goes to the rule's owner (a Route, or the RouteTable a delegated rule comes from),
located at the rule, and leaves it Accepted. Replaced rules are already Invalid and are not
reported, though they do shadow: they answer the Gateway's invalid-route response.
"""

from __future__ import annotations

from collections.abc import Sequence

from propylon.ir import RuleIR
from propylon.runtime.router import RouterEntry, shadowed
from propylon.translate.context import GatewayContext
from propylon.translate.delegation import Draft


def report_shadowed(ctx: GatewayContext, rules: Sequence[tuple[Draft, RuleIR]]) -> None:
    entries: list[RouterEntry[int]] = []
    for index, (_, rule) in enumerate(rules):
        for match in rule.matches:
            entries.append(RouterEntry(rule.hostnames, match, index, len(entries)))
    shadows = shadowed(entries)
    if not shadows:
        return
    own: dict[int, list[RouterEntry[int]]] = {}
    for entry in entries:
        own.setdefault(entry.payload, []).append(entry)
    for index, (draft, rule) in enumerate(rules):
        mine = own.get(index, [])
        if rule.replaced or not mine or any(e.order not in shadows for e in mine):
            continue
        winner, _ = rules[shadows[mine[0].order].payload]
        ctx.status.warn(
            draft.owner.kind,
            draft.owner.key,
            f"never matches on Gateway {ctx.gateway.key}: {rule_name(winner)} takes every "
            "request it matches",
            field=f"spec.rules[{draft.index}]",
        )


def rule_name(draft: Draft) -> str:
    """``Route shop/shop rule api`` or ``Route shop/shop rule #2``, as policy sources say."""
    return f"{draft.owner.ref} rule {draft.label}"
