"""Fixtures of the edge-hardening tests (parser rules, limits, TLS, WebSocket, Expect).

The gateway and upstream factories come from ``tests/integration/conftest.py``; this adds a
per-module trustme CA and a recording upstream.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.recording import RecordingUpstream
from tests.support.tls import Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def recorder() -> Iterator[RecordingUpstream]:
    upstream = RecordingUpstream("rec").start()
    yield upstream
    upstream.stop()
