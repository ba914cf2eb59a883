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
from propylon.runtime.router import CATCH_ALLS, RouterEntry, shadowed
from propylon.translate.context import GatewayContext
from propylon.translate.delegation import Draft


def report_shadowed(ctx: GatewayContext, rules: Sequence[tuple[Draft, RuleIR]]) -> None:
    entries = _sharing_entries(rules)
    shadows = shadowed(entries)
    if not shadows:
        return
    own: dict[int, list[RouterEntry[int]]] = {}
    for entry in entries:
        own.setdefault(entry.payload, []).append(entry)
    for index, (draft, rule) in enumerate(rules):
        mine = own.get(index, [])
        if (rule.replaced or not mine or len(mine) != len(rule.matches)  # one left out: alone
                or any(e.order not in shadows for e in mine)):
            continue
        winner, _ = rules[shadows[mine[0].order].payload]
        ctx.status.warn(
            draft.owner.kind,
            draft.owner.key,
            f"never matches on Gateway {ctx.gateway.key}: {rule_name(winner)} takes every "
            "request it matches",
            field=f"spec.rules[{draft.index}]",
        )


def _sharing_entries(rules: Sequence[tuple[Draft, RuleIR]]) -> list[RouterEntry[int]]:
    """The router entries of ``rules`` (one per match, in rule order, the rule's index as
    payload) that ``shadowed`` needs to see: those sharing a bucket (host, kind, path) with
    another, or all of them when a catch-all regex may shadow any. Made only for those: most
    rules of a large configuration have paths of their own (``router._sharing_paths``)."""
    seen: dict[tuple[str, str, str], int] = {}
    placed: list[tuple[int, RuleIR, int, list[tuple[str, str, str]]]] = []
    hosts_of: dict[tuple[str, ...], tuple[str, ...]] = {(): ("*",)}
    catch_all = False
    for index, (_, rule) in enumerate(rules):
        hosts = hosts_of.get(rule.hostnames)
        if hosts is None:
            hosts = hosts_of[rule.hostnames] = tuple(dict.fromkeys(
                h.lower() for h in rule.hostnames))
        for position, match in enumerate(rule.matches):
            path = match.path
            kind = path.kind
            if kind == "regex" and path.value in CATCH_ALLS:
                catch_all = True
            key = path.value.rstrip("/") if kind == "prefix" else path.value
            own = [(host, kind, key) for host in hosts]
            for bucket in own:
                seen[bucket] = seen.get(bucket, 0) + 1
            placed.append((index, rule, position, own))
    return [RouterEntry(rule.hostnames, rule.matches[position], index, order)
            for order, (index, rule, position, own) in enumerate(placed)
            if catch_all or any(seen[bucket] > 1 for bucket in own)]


def rule_name(draft: Draft) -> str:
    """``Route shop/shop rule api`` or ``Route shop/shop rule #2``, as policy sources say."""
    return f"{draft.owner.ref} rule {draft.label}"
