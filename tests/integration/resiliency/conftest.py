"""Resiliency suite: killable process upstreams, endpoint-health readers, measured figures.

Every figure a test measures is recorded with the ``figure`` fixture and printed in the
terminal summary (and written as JSON to ``$PROPYLON_FIGURES_FILE`` when that is set:
``tests/support/report.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support import report
from tests.support.gateway import Gateway, metric_value
from tests.support.proc_upstream import ProcessUpstream


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str, Any], None]:
    def record(name: str, value: Any) -> None:
        report.figure("resiliency figures", f"{request.node.name}: {name}", value)

    return record


def _proc_upstreams() -> Iterator[Callable[..., ProcessUpstream]]:
    started: list[ProcessUpstream] = []

    def make(name: str, port: int | None = None) -> ProcessUpstream:
        upstream = ProcessUpstream(name, port).start()
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        upstream.stop()


@pytest.fixture
def proc_upstreams() -> Iterator[Callable[..., ProcessUpstream]]:
    yield from _proc_upstreams()


@pytest.fixture(scope="module")
def module_proc_upstreams() -> Iterator[Callable[..., ProcessUpstream]]:
    yield from _proc_upstreams()


def endpoints(gw: Gateway, upstream: str) -> dict[int, dict[str, Any]]:
    """/stats endpoint health of ``upstream`` ("default/name"), keyed by port."""
    return {int(ep["endpoint"].rsplit(":", 1)[1]): ep for ep in gw.stats()["endpoints"]
            if ep["upstream"] == upstream}


def healthy_gauge(gw: Gateway, upstream: str, port: int) -> float:
    return metric_value(gw.metrics(), "propylon_upstream_endpoint_healthy",
                        upstream=upstream, endpoint=f"127.0.0.1:{port}")


def events(gw: Gateway, upstream: str, kind: str) -> float:
    return metric_value(gw.metrics(), "propylon_upstream_events_total",
                        upstream=upstream, kind=kind)


def upstream_counters(gw: Gateway, upstream_name: str) -> dict[str, Any]:
    for item in gw.stats()["upstreams"]:
        if item["upstream"] == upstream_name:
            return item
    return {}
