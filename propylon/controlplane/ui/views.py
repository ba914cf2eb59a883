"""What the dashboard's pages show, as plain rows: made from the control plane's state (fleets,
statuses, per-Gateway IR, rollouts), never from HTML. Pure functions, tested without sockets."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from propylon import ir
from propylon.policies.plugins import policy_types


def rollout_text(rollout: Mapping[str, Any] | None) -> str:
    """One line: phase, step, share and how many proxies were given the candidate, as
    ``propylon status`` says it (``diffview.render_rollout``). Given, not running: a proxy
    given the candidate may have refused it (NACK), and after a rollback or an abort every
    proxy is served the stable version again (each proxy's row says what it runs)."""
    if not rollout:
        return "none"
    return (f"{rollout['phase']}, step {rollout['step']}/{len(rollout['steps'])} "
            f"({rollout['share']}%), {len(rollout['given'])}/"
            f"{rollout.get('proxiesConnected', 0)} proxies given")


def ago(seconds_since_epoch: float | None, now: float) -> str:
    if not seconds_since_epoch:
        return "never"
    return f"{max(now - float(seconds_since_epoch), 0):.0f}s ago"


def proxy_rows(proxies: Iterable[Mapping[str, Any]], now: float) -> list[dict[str, Any]]:
    return [{
        "id": str(p["id"]), "version": str(p.get("version") or "-"),
        "state": str(p.get("state") or "-"), "connected": bool(p.get("connected")),
        "seen": ago(p.get("lastSeen"), now),
        "error": (f"{p.get('lastNackVersion', '')}: {p['lastError']}"
                  if p.get("lastError") else ""),
    } for p in proxies]


def resource_rows(statuses: Iterable[ir.StatusIR]) -> list[dict[str, Any]]:
    """Every resource's status, the invalid ones first."""
    rows = [{"kind": s.kind, "key": s.key, "state": s.state, "reasons": list(s.reasons),
             "gateways": list(s.gateways)} for s in statuses]
    return sorted(rows, key=lambda r: (r["state"] == "Accepted", r["kind"], r["key"]))


def _value_match(kind: str, m: ir.ValueMatchIR) -> str:
    if m.regex is not None:
        return f"{kind} {m.name} ~ {m.regex}"
    return f"{kind} {m.name} = {m.value}" if m.value is not None else f"{kind} {m.name}"


def match_text(match: ir.MatchIR) -> str:
    parts = [f"path {match.path.kind} {match.path.value}"]
    if match.method:
        parts.insert(0, match.method)
    parts += [_value_match("header", h) for h in match.headers]
    parts += [_value_match("query", q) for q in match.query]
    return ", ".join(parts)


def action_text(action: ir.Action) -> str:
    if isinstance(action, ir.ForwardIR):
        backends = ", ".join(f"{b.upstream} ({b.weight})" if len(action.backends) > 1
                             else b.upstream for b in action.backends)
        rewrite = action.rewrite
        extra = ""
        if rewrite is not None:
            extra = f", rewrite to {rewrite.full_path or rewrite.prefix}"
        return f"forward to {backends}{extra}"
    if isinstance(action, ir.RedirectIR):
        target = "".join([f"{action.scheme}://" if action.scheme else "", action.host or "",
                          f":{action.port}" if action.port else "", action.path or ""])
        return f"redirect {action.status_code} {target or '(same URL)'}"
    return f"direct response {action.status}"


RULES_PER_PAGE = 200  # a Gateway of 10,000 Routes has 40,000 rules: 8 MB of HTML at once


@dataclass(frozen=True)
class RulePage:
    """One page of a Gateway's route table: its rows, where it starts among the rules the
    filter kept, and how many it kept."""

    rows: list[dict[str, Any]]
    start: int
    found: int
    size: int = RULES_PER_PAGE

    @property
    def previous(self) -> int | None:
        return max(0, self.start - self.size) if self.start > 0 else None

    @property
    def next(self) -> int | None:
        after = self.start + self.size
        return after if after < self.found else None


def rule_page(gateway: ir.GatewayIR, start: int = 0, text: str = "",
              size: int = RULES_PER_PAGE) -> RulePage:
    """The rules from ``start`` (in router order) of those whose id, owner, delegation path,
    hostnames or paths contain ``text`` (case-insensitive; every rule when empty)."""
    needle = text.strip().lower()
    rules = [rule for rule in gateway.rules if _mentions(rule, needle)] if needle \
        else gateway.rules
    start = min(max(start, 0), max(len(rules) - 1, 0))
    return RulePage(rule_rows(rules[start:start + size], gateway.default_policies), start,
                    len(rules), size)


def _mentions(rule: ir.RuleIR, needle: str) -> bool:
    return any(needle in part.lower() for part in (
        rule.id, rule.route, *rule.delegated_from, *rule.hostnames,
        *(m.path.value for m in rule.matches)))


def rule_rows(rules: Iterable[ir.RuleIR], defaults: tuple[ir.PolicyIR, ...] = ()
              ) -> list[dict[str, Any]]:
    """``defaults``: the Gateway's default policies, which rules apply for the types they
    have none of (``ir.effective_policies``)."""
    rank = policy_types().rank
    return [{
        "id": rule.id, "route": rule.route, "replaced": rule.replaced,
        "via": " -> ".join(rule.delegated_from),
        "hosts": ", ".join(rule.hostnames) or "any",
        "matches": [match_text(m) for m in rule.matches] or ["any request"],
        "action": action_text(rule.action),
        "policies": ", ".join(
            p.type for p in ir.effective_policies(defaults, rule.policies, rank)) or "-",
    } for rule in rules]


def upstream_lines(gateway: ir.GatewayIR) -> list[str]:
    return [f"{u.key}: " + ", ".join(f"{e.address}:{e.port}" for e in u.endpoints)
            for u in gateway.upstreams]


def timeline_rows(rollout: Mapping[str, Any]) -> list[dict[str, str]]:
    start = float(rollout["startedAt"])
    rows = []
    for event in rollout["timeline"]:
        details = []
        if "share" in event:
            details.append(f"{event['share']}%")
        if event.get("proxies"):
            details.append("proxies " + ", ".join(event["proxies"]))
        if event.get("reason"):
            details.append(event["reason"])
        rows.append({"offset": f"{float(event['at']) - start:.1f}", "event": event["event"],
                     "details": "; ".join(details)})
    return rows


def parse_headers(text: str) -> dict[str, str]:
    """``Name: value`` lines from the explain form; ValueError names a bad line."""
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise ValueError(f"header line {number} is not 'Name: value'")
        headers[name.strip().lower()] = value.strip()
    return headers


def traffic_totals(proxies: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """Requests and 5xx answers the proxies reported, over every version they remember."""
    requests = errors = 0
    for proxy in proxies:
        health = proxy.get("health")
        traffic = health.get("traffic", {}) if isinstance(health, dict) else {}
        for counts in traffic.values() if isinstance(traffic, dict) else ():
            if isinstance(counts, dict):
                requests += int(counts.get("requests", 0) or 0)
                errors += int(counts.get("errors5xx", 0) or 0)
    return requests, errors


@dataclass
class RateMeter:
    """Request and 5xx rates per Gateway from the proxies' cumulative reports: totals are
    sampled when the dashboard asks (at most once a second), rates are over ``window``
    seconds of samples. Proxies report every few seconds, so rates move in steps."""

    window: float = 15.0
    samples: dict[str, deque[tuple[float, int, int]]] = field(default_factory=dict)

    def rate(self, gateway: str, totals: tuple[int, int],
             now: float | None = None) -> tuple[float, float] | None:
        now = time.monotonic() if now is None else now
        kept = self.samples.setdefault(gateway, deque())
        if not kept or now - kept[-1][0] >= 1.0:
            kept.append((now, *totals))
        while len(kept) > 2 and now - kept[0][0] > self.window:
            kept.popleft()
        (t0, r0, e0), (t1, r1, e1) = kept[0], kept[-1]
        if t1 - t0 < 1.0:
            return None
        return max(r1 - r0, 0) / (t1 - t0), max(e1 - e0, 0) / (t1 - t0)


def rate_text(rate: tuple[float, float] | None) -> str:
    if rate is None:
        return "measuring…"
    return f"{rate[0]:.1f} req/s, {rate[1]:.1f} 5xx/s"
