"""Access log counters, in the style of ``waf_metrics.py`` (a plain counter in each worker, in
its snapshot, summed by the supervisor, turned into a metric family at scrape time).

Series (docs/operations.md):
  propylon_access_log_lines_dropped_total   lines stdout could not take without waiting

The counter belongs to the process, not to a configuration, so it stays monotonic across
reloads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric


class AccessLogCounters:
    __slots__ = ("dropped",)

    def __init__(self) -> None:
        self.dropped = 0

    def snapshot(self) -> dict[str, Any]:
        return {"dropped": self.dropped}


ACCESS_LOG_COUNTERS = AccessLogCounters()  # this process's


def merge_access_log(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """The workers' ``access_log`` snapshots summed."""
    return {"dropped": sum((snap.get("access_log") or {}).get("dropped", 0)
                           for snap in snapshots)}


def access_log_families(snapshot: dict[str, Any]) -> Iterator[Metric]:
    counts = snapshot.get("access_log") or merge_access_log([])
    dropped = CounterMetricFamily(
        "propylon_access_log_lines_dropped", "Access log lines dropped because stdout (a pipe, "
        "a terminal or a socket) could not take them without waiting: its reader stopped "
        "reading. Requests are never held up by the log.")
    dropped.add_metric([], counts["dropped"])
    yield dropped
