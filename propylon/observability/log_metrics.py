"""Log counters, in the style of ``waf_metrics.py`` (plain counters in each process, in a
worker's snapshot, summed by the supervisor with its own, turned into metric families at
scrape time).

Series (docs/operations.md):
  propylon_access_log_lines_dropped_total   access log lines stdout could not take at once
  propylon_log_records_dropped_total        the gateway's own log records stderr could not

Both count what a pipe, a terminal or a socket whose reader stopped reading had no room for
(``nonblocking.py``). The counters belong to the process, not to a configuration, so they stay
monotonic across reloads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.core import Metric

FIELDS = ("access_lines_dropped", "records_dropped")


class LogCounters:
    __slots__ = FIELDS

    def __init__(self) -> None:
        self.access_lines_dropped = 0
        self.records_dropped = 0

    def snapshot(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}


LOG_COUNTERS = LogCounters()  # this process's


def merge_logs(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``logs`` parts of ``snapshots`` summed."""
    return {name: sum((snap.get("logs") or {}).get(name, 0) for snap in snapshots)
            for name in FIELDS}


def log_families(snapshot: dict[str, Any]) -> Iterator[Metric]:
    # imported at scrape time: every process counts its log lines, and Prometheus' client
    # (a fiftieth of a second) was imported with the logging, before anything else started
    from prometheus_client.core import CounterMetricFamily

    counts = snapshot.get("logs") or merge_logs([])
    lines = CounterMetricFamily(
        "propylon_access_log_lines_dropped", "Access log lines dropped because stdout (a pipe, "
        "a terminal or a socket) could not take them without waiting: its reader stopped "
        "reading. Requests are never held up by the log.")
    lines.add_metric([], counts["access_lines_dropped"])
    records = CounterMetricFamily(
        "propylon_log_records_dropped", "The gateway's own log records dropped because stderr "
        "(a pipe, a terminal or a socket) could not take them without waiting.")
    records.add_metric([], counts["records_dropped"])
    yield from (lines, records)
