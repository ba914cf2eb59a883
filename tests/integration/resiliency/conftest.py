"""Resiliency suite: killable process upstreams, endpoint-health readers, measured figures.

Every figure a test measures is recorded with the ``figure`` fixture and printed in the
terminal summary (and written as JSON to ``$PROPYLON_FIGURES_FILE`` when that is set).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.gateway import Gateway, metric_value
from tests.support.proc_upstream import ProcessUpstream

FIGURES: dict[str, Any] = {}


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str, Any], None]:
    def record(name: str, value: Any) -> None:
        FIGURES[f"{request.node.name}: {name}"] = value

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("resiliency figures")
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"{name} = {value}")
    target = os.environ.get("PROPYLON_FIGURES_FILE")
    if target:
        with open(target, "w") as out:
            json.dump(FIGURES, out, indent=2, default=str)


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
