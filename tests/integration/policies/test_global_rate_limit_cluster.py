"""Global rate limits in a real Redis Cluster (three primaries), shared by four proxy processes.

The same shape as ``test_global_rate_limit.py`` (one redis-server) with ``cluster: true``:
each proxy is given a different node as its seed address. The last test stops every node and
starts them again, so it stays last in this module.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.policies._helpers import (
    EDGE_AND_ECHO,
    GatewayProc,
    Upstream,
    poll_until,
    request,
)
from tests.integration.policies._load import check_shared_limit
from tests.integration.policies._redis_cluster import RedisCluster, redis_cli

CONFIG = EDGE_AND_ECHO + """apiVersion: propylon.dev/v1
kind: Route
metadata: {name: api}
spec:
  rules:
    - matches: [{path: {prefix: /api}}]
      forward: {backends: [{upstream: echo}]}
      policies:
        - rateLimit:
            mode: global
            redis: {address: "127.0.0.1:REDIS", cluster: true, timeout: 200ms}
            limits: [{requests: 100, per: 1s}]
    - matches: [{path: {prefix: /clients}}]
      forward: {backends: [{upstream: echo}]}
      policies:
        - rateLimit:
            mode: global
            redis: {address: "127.0.0.1:REDIS", cluster: true, timeout: 200ms,
                    prefix: "propylon:spread"}
            limits:
              - {requests: 5, per: 1m, key: [header:x-client]}
              - {requests: 1000, per: 1h, key: [path]}
    - matches: [{path: {prefix: /tight}}]
      forward: {backends: [{upstream: echo}]}
      policies:
        - rateLimit:
            mode: global
            redis: {address: "127.0.0.1:REDIS", cluster: true, timeout: 200ms}
            limits: [{requests: 1, per: 1h}]
    - matches: [{path: {prefix: /closed}}]
      forward: {backends: [{upstream: echo}]}
      policies:
        - rateLimit:
            mode: global
            failureMode: closed
            redis: {address: "127.0.0.1:REDIS", cluster: true, timeout: 200ms}
            limits: [{requests: 1000, per: 1s}]
    - forward: {backends: [{upstream: echo}]}
"""
SECONDS = 6.0
CLIENTS = 30


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream,
            redis_cluster: RedisCluster) -> Iterator[list[GatewayProc]]:
    root: Path = tmp_path_factory.mktemp("global-cluster")
    procs: list[GatewayProc] = []
    try:
        for i in range(4):
            seed = redis_cluster.ports[i % len(redis_cluster.ports)]
            config = CONFIG.replace("UPSTREAM", str(upstream.port)).replace("REDIS", str(seed))
            procs.append(GatewayProc(root / f"proxy{i}", config, wait=False))
        for proc in procs:  # the four start together
            proc.wait_ready()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def test_four_proxies_share_one_limit_in_the_cluster(proxies: list[GatewayProc],
                                                     redis_cluster: RedisCluster) -> None:
    check_shared_limit([p.port for p in proxies], "/api", SECONDS,
                       "4 proxies, Redis Cluster of 3")


def test_limits_of_many_clients_spread_over_the_nodes(proxies: list[GatewayProc],
                                                      redis_cluster: RedisCluster) -> None:
    """Two limits per request (per client, per path): both hold across proxies, and the
    buckets' keys live on more than one primary, each in a slot of its own hash tag."""
    for c in range(CLIENTS):
        statuses = [request(proxies[(c + n) % len(proxies)].port, "GET", "/clients",
                            {"x-client": f"client-{c}"})[0] for n in range(6)]
        assert statuses == [200] * 5 + [429], (c, statuses)
    per_node = {port: redis_cluster.keys(port, "propylon:spread:*")
                for port in redis_cluster.masters}
    counts = {port: len(keys) for port, keys in per_node.items()}
    keys = [k for node_keys in per_node.values() for k in node_keys]
    slots = {redis_cluster.keyslot(k) for k in keys}
    print(f"\n{len(keys)} bucket keys over the primaries {counts}, {len(slots)} slots")
    assert len(keys) == CLIENTS + 1  # one per client, one for the path
    assert sum(1 for n in counts.values() if n) >= 2, counts
    assert len(slots) == len(keys)
    # every bucket is on the node that owns its slot; read its tokens there: the per-path one
    # counted all 180 requests of the four proxies (1000 - 180 = 820, refill 1000/h)
    tokens = sorted(float(redis_cli("-p", str(port), "hget", k, "v").strip())
                    for port, node_keys in per_node.items() for k in node_keys)
    print(f"tokens left: per client {tokens[:-1][:3]}..., per path {tokens[-1]}")
    assert all(t < 1.0 for t in tokens[:-1]), tokens
    assert 819.0 <= tokens[-1] <= 822.0, tokens

def test_failure_modes_when_the_cluster_is_down_and_recovery(
        proxies: list[GatewayProc], redis_cluster: RedisCluster) -> None:
    port = proxies[2].port
    assert [request(port, "GET", "/tight")[0] for _ in range(2)] == [200, 429]
    assert request(port, "GET", "/closed")[0] == 200

    redis_cluster.stop_all()
    try:
        # open: the 1/h limit that just refused lets everything through; closed: 503
        assert [request(port, "GET", "/tight")[0] for _ in range(5)] == [200] * 5
        assert [request(port, "GET", "/closed")[0] for _ in range(3)] == [503] * 3
        assert request(port, "GET", "/other")[0] == 200  # routes without the policy: served
        for proxy in proxies:
            assert request(proxy.port, "GET", "/closed")[0] == 503
    finally:
        redis_cluster.start()
    redis_cluster.wait_ok()
    ok_at = time.monotonic()

    # back: the data is gone (no persistence), so a fresh 1/h bucket refuses its second request
    for proxy in proxies:
        poll_until(lambda p=proxy.port: request(p, "GET", "/closed")[0] == 200,  # type: ignore[misc]
                   timeout=15, interval=0.1)
    poll_until(lambda: request(port, "GET", "/tight")[0] == 429, timeout=15, interval=0.1)
    print(f"\nall proxies answered from the cluster again {time.monotonic() - ok_at:.2f}s "
          "after cluster_state:ok")
