"""Fixtures for the policy integration tests: an echo upstream, a redis-server, a Redis Cluster."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.integration.policies._helpers import RedisServer, Upstream
from tests.integration.policies._redis_cluster import RedisCluster


@pytest.fixture(scope="package")
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.stop()


@pytest.fixture(scope="package")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server.port
    server.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """Three primaries (no replicas) on free ports, ``cluster_state:ok``; stopped by PID and
    their directory removed at the end. Module scope: a test may stop and restart it."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server/redis-cli are not installed (Debian redis-server, redis-tools)")
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"), masters=3)
    yield cluster
    cluster.close()
