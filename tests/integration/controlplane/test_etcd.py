"""Two control-plane replicas sharing one real etcd (Debian's ``etcd-server``): a write
through one reaches a proxy connected to the other, and both show the same fleet."""

from __future__ import annotations

import pytest

from tests.integration.controlplane.conftest import Cluster
from tests.integration.controlplane.helpers import (
    ETCD,
    free_port,
    route,
    served_by,
    start_etcd,
    wait_until,
)
from tests.integration.controlplane.test_distribution import _gateway_config


def _etcd(cluster: Cluster) -> str:
    return start_etcd(cluster.procs, cluster.tmp)


@pytest.mark.skipif(ETCD is None, reason="etcd-server (Debian package) is not installed")
def test_two_replicas_share_state_through_etcd(cluster: Cluster) -> None:
    store = _etcd(cluster)
    first = cluster.control("control-a", store=store)
    second = cluster.control("control-b", store=store)
    gw, echo = free_port(), cluster.echo("svc")
    _gateway_config(first, gw, echo)  # written through replica A
    cluster.proxy("proxy", second, "infra/edge")  # connected to replica B
    assert wait_until(lambda: served_by(gw, "/") == (200, "svc"), what="B's proxy to serve")

    first.must_put(route("extra", "shop", "/extra", "svc"))
    assert wait_until(lambda: served_by(gw, "/extra/x") == (200, "svc"),
                      what="a write through A to reach B's proxy")

    stale = route("extra", "shop", "/other", "svc")
    stale["metadata"]["resourceVersion"] = "1"
    assert second.put(stale)[0] == 409  # etcd's transaction refuses the stale version

    def proxy_seen_by_a() -> bool:
        fleet = next(g for g in first.get("/v1/status")[1]["gateways"]
                     if g["gateway"] == "infra/edge")
        return bool(fleet["proxies"]) and fleet["proxies"][0]["version"] == fleet["version"]

    assert wait_until(proxy_seen_by_a, what="replica A to show B's proxy running its version")
