"""Fixtures: gateway processes and scripted upstreams, per test or per module, always stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import Config, Gateway
from tests.support.upstream import ScriptedUpstream

UpstreamFactory = Callable[..., ScriptedUpstream]
GatewayFactory = Callable[..., Gateway]


def _upstreams() -> Iterator[UpstreamFactory]:
    started: list[ScriptedUpstream] = []

    def make(name: str = "up") -> ScriptedUpstream:
        upstream = ScriptedUpstream(name).start()
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        upstream.stop()


def _gateways(root: Callable[[], Path]) -> Iterator[GatewayFactory]:
    started: list[Gateway] = []

    def make(config: Config, *, wait: bool = True, **options: Any) -> Gateway:
        """A started gateway; with ``wait=False`` only launched (the caller calls
        ``wait_ready``)."""
        gateway = Gateway(root(), config, **options)
        started.append(gateway)
        return gateway.start() if wait else gateway.launch()

    yield make
    for gateway in started:
        gateway.stop()


@pytest.fixture
def upstreams() -> Iterator[UpstreamFactory]:
    yield from _upstreams()


@pytest.fixture(scope="module")
def module_upstreams() -> Iterator[UpstreamFactory]:
    yield from _upstreams()


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[GatewayFactory]:
    counter = iter(range(1000))
    yield from _gateways(lambda: tmp_path / f"gw{next(counter)}")


@pytest.fixture(scope="module")
def module_gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayFactory]:
    yield from _gateways(lambda: tmp_path_factory.mktemp("gw"))
