"""Tracing counters: spans exported and dropped, in the style of ``waf_metrics.py`` (plain
counters in each worker, in its snapshot, summed by the supervisor, turned into metric
families at scrape time).

Series (docs/operations.md):
  propylon_tracing_spans_exported_total           spans the collector accepted
  propylon_tracing_spans_dropped_total{reason}    queue_full | export_failed

``queue_full`` is counted on the event loop's thread (a span ended while the batch queue was
full: the collector is slow or away), ``exported`` and ``export_failed`` on the exporter's
thread (after the exporter's own retries); each counter has one writer. The counters belong to
the process, not to a configuration, so they stay monotonic across reloads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.core import Metric

DROP_REASONS = ("queue_full", "export_failed")


class TracingCounters:
    __slots__ = ("export_failed", "exported", "queue_full")

    def __init__(self) -> None:
        self.exported = 0
        self.queue_full = 0
        self.export_failed = 0

    def snapshot(self) -> dict[str, Any]:
        return {"exported": self.exported,
                "dropped": {"queue_full": self.queue_full, "export_failed": self.export_failed}}


TRACING_COUNTERS = TracingCounters()  # this process's


def merge_tracing(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """The workers' ``tracing`` snapshots summed."""
    exported = 0
    dropped = dict.fromkeys(DROP_REASONS, 0)
    for snap in snapshots:
        tracing = snap.get("tracing") or {}
        exported += tracing.get("exported", 0)
        for reason, n in (tracing.get("dropped") or {}).items():
            dropped[reason] = dropped.get(reason, 0) + n
    return {"exported": exported, "dropped": dropped}


def tracing_families(snapshot: dict[str, Any]) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily  # at scrape time (log_metrics.py)

    tracing = snapshot.get("tracing") or merge_tracing([])
    exported = CounterMetricFamily(
        "propylon_tracing_spans_exported", "Spans the OTLP collector accepted.")
    exported.add_metric([], tracing["exported"])
    dropped = CounterMetricFamily(
        "propylon_tracing_spans_dropped", "Spans dropped instead of exported: queue_full (the "
        "bounded batch queue was full: the collector is slow or away), export_failed (the "
        "collector refused the batch or could not be reached, after the exporter's retries).",
        labels=["reason"])
    for reason in DROP_REASONS:
        dropped.add_metric([reason], tracing["dropped"].get(reason, 0))
    yield from (exported, dropped)
