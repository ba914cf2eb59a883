"""``process_*`` and ``python_*`` series for the supervisor and each worker (label ``worker``).

``process_*`` come from ``prometheus_client``'s ``ProcessCollector``, which reads
``/proc/PID`` and so works for another process of the same user: the supervisor reads its
workers' without asking them. ``python_gc_*`` need the process's own ``gc.get_stats()``, which
each worker sends with its counters. ``python_info`` is the supervisor's interpreter, which
the workers run too. ``worker`` is "supervisor" or the worker's index (0 .. --workers - 1),
so the series are bounded by the process flags.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.samples import Sample


@dataclass(frozen=True)
class ProcessInfo:
    worker: str  # the label value
    pid: int | None  # None: this process
    gc_stats: list[dict[str, Any]] | None  # gc.get_stats() of that process


def this_process() -> ProcessInfo:
    return ProcessInfo("supervisor", None, gc.get_stats())


def process_families(processes: Sequence[ProcessInfo]) -> Iterator[Metric]:
    merged: dict[str, Metric] = {}
    for process in processes:
        for family in _families_of(process):
            labelled = _with_worker(family, process.worker)
            into = merged.get(family.name)
            if into is None:
                merged[family.name] = labelled
            else:
                into.samples.extend(labelled.samples)
    return iter(merged.values())


def _families_of(process: ProcessInfo) -> Iterable[Metric]:
    pid = process.pid
    collector = ProcessCollector(registry=None) if pid is None else ProcessCollector(
        pid=lambda: pid, registry=None)
    yield from collector.collect()
    yield from PlatformCollector(registry=None).collect()
    if process.gc_stats is not None:
        yield from _gc_families(process.gc_stats)


def _gc_families(stats: list[dict[str, Any]]) -> Iterator[Metric]:
    """The families of ``prometheus_client``'s ``GCCollector``, from given stats."""
    collected = CounterMetricFamily("python_gc_objects_collected",
                                    "Objects collected during gc", labels=["generation"])
    uncollectable = CounterMetricFamily("python_gc_objects_uncollectable",
                                        "Uncollectable objects found during GC",
                                        labels=["generation"])
    collections = CounterMetricFamily("python_gc_collections",
                                      "Number of times this generation was collected",
                                      labels=["generation"])
    for generation, stat in enumerate(stats):
        collected.add_metric([str(generation)], stat["collected"])
        uncollectable.add_metric([str(generation)], stat["uncollectable"])
        collections.add_metric([str(generation)], stat["collections"])
    yield from (collected, uncollectable, collections)


def _with_worker(family: Metric, worker: str) -> Metric:
    copy = Metric(family.name, family.documentation, family.type, family.unit)
    copy.samples = [
        Sample(s.name, {**s.labels, "worker": worker}, s.value, s.timestamp, s.exemplar)
        for s in family.samples
    ]
    return copy
