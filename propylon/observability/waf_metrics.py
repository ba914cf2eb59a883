"""WAF counters: interventions of the ``waf`` policy by rule and action, in the style of
``metrics.py`` (plain counters in each worker, in its snapshot, summed by the supervisor,
turned into metric families at scrape time).

Series (docs/operations.md):
  propylon_waf_requests_total{action}            action: blocked | detected
  propylon_waf_rule_matches_total{rule,action}   the rules behind each intervention

Labels stay bounded: a rule id is one that a loaded rule set defines (the CRS, the shipped
Log4Shell rules or a policy's ``rules``; ``propylon/waf/report.py`` believes no other), never
text from a request, and the action is one of ``ACTIONS``. The counters belong to the process
(each worker is one), not to a configuration, so they stay monotonic across reloads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.core import Metric

ACTIONS = ("blocked", "detected")


class WafCounters:
    __slots__ = ("by_rule", "requests")

    def __init__(self) -> None:
        self.by_rule: dict[tuple[str, str], int] = {}  # (rule id, action) -> interventions
        self.requests: dict[str, int] = dict.fromkeys(ACTIONS, 0)

    def count(self, rule_ids: tuple[str, ...], action: str) -> None:
        """One intervention (on the event loop's thread)."""
        self.requests[action] += 1
        by_rule = self.by_rule
        for rule_id in rule_ids:
            key = (rule_id, action)
            by_rule[key] = by_rule.get(key, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {"requests": dict(self.requests),
                "by_rule": [[rule, action, n] for (rule, action), n in self.by_rule.items()]}


WAF_COUNTERS = WafCounters()  # this process's


def merge_waf(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """The workers' ``waf`` snapshots summed."""
    requests = dict.fromkeys(ACTIONS, 0)
    by_rule: dict[tuple[str, str], int] = {}
    for snap in snapshots:
        waf = snap.get("waf") or {}
        for action, n in waf.get("requests", {}).items():
            requests[action] = requests.get(action, 0) + n
        for rule, action, n in waf.get("by_rule", []):
            by_rule[(rule, action)] = by_rule.get((rule, action), 0) + n
    return {"requests": requests,
            "by_rule": [[r, a, n] for (r, a), n in sorted(by_rule.items())]}


def waf_families(snapshot: dict[str, Any]) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily  # at scrape time (log_metrics.py)

    waf = snapshot.get("waf") or {"requests": {}, "by_rule": []}
    requests = CounterMetricFamily(
        "propylon_waf_requests", "Requests the waf policy intervened on, by action (blocked: "
        "answered 403; detected: detect mode, or a response-header finding).",
        labels=["action"])
    for action, n in sorted(waf["requests"].items()):
        requests.add_metric([action], n)
    rules = CounterMetricFamily(
        "propylon_waf_rule_matches", "Rules behind waf interventions, by rule id and action.",
        labels=["rule", "action"])
    for rule, action, n in waf["by_rule"]:
        rules.add_metric([rule, action], n)
    yield from (requests, rules)
