"""End-to-end fixtures: processes stopped by PID at teardown, separate networks when possible.

``isolated`` yields (networks, processes): the processes are stopped before the namespaces are
deleted, even when the test fails. ``PROPYLON_E2E_NETNS=off`` forces the loopback fallback,
``=on`` requires namespaces (tests/support/netns.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.e2e import Procs
from tests.support.netns import Networks, networks


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    started = Procs(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[tuple[Networks, Procs]]:
    with networks("t") as nets:
        started = Procs(tmp_path)
        try:
            yield nets, started
        finally:
            started.stop_all()
