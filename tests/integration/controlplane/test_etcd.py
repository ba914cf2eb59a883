"""Two control-plane replicas sharing one real etcd (Debian's ``etcd-server``): a write
through one reaches a proxy connected to the other, and both show the same fleet."""

from __future__ import annotations

import pytest

from tests.integration.controlplane.conftest import Cluster, ControlPlane
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


@pytest.mark.skipif(ETCD is None, reason="etcd-server (Debian package) is not installed")
def test_replicas_share_a_rollouts_end_and_a_restarted_one_keeps_it(cluster: Cluster) -> None:
    """An abort asked of replica A sends back the proxy replica B gave the candidate (B took
    the end from the store; it used to go on with its own rollout), and B restarted keeps
    serving the stable version, from the IR kept in etcd, to a proxy that never ran one."""
    from tests.integration.controlplane.helpers import gateway, http, upstream
    from tests.integration.controlplane.test_rollout import KEY, _fleet, _route

    store = _etcd(cluster)
    first = cluster.control("control-a", store=store)
    b_port = free_port()
    second = cluster.control("control-b", store=store, port=b_port)
    first.must_put(upstream("svc", "shop", cluster.echo("svc")))
    first.must_put(_route())
    edge = gateway("edge", "infra", free_port(), ["shop"])
    edge["spec"]["rollout"] = {"steps": [50, 100], "interval": "60s", "minRequests": 20}
    first.must_put(edge)
    cluster.proxy("proxy-a", first, KEY, cache="cache-a")
    cluster.proxy("proxy-b", second, KEY, cache="cache-b")

    def on(plane: ControlPlane, version: str) -> int:
        return sum(p["connected"] and p.get("version") == version
                   for p in _fleet(plane.get("/v1/status")[1])["proxies"])

    stable = wait_until(lambda: _fleet(first.get("/v1/status")[1])["version"], what="v1")
    wait_until(lambda: on(first, stable) == 2, what="both proxies on v1")
    first.must_put(_route(tag="2"))  # no traffic: the rollout holds at its first step
    for plane in (first, second):
        wait_until(lambda p=plane: len((_fleet(p.get("/v1/status")[1])["rollout"] or {})
                                       .get("given", [])) == 1, what="one proxy given")
    candidate = _fleet(first.get("/v1/status")[1])["rollout"]["candidate"]
    wait_until(lambda: on(first, candidate) == 1, what="the given proxy on the candidate")

    status, body = http("POST", f"{first.url}/v1/gateways/{KEY}/rollout/abort",
                        token=first.token)
    assert status == 200 and body["phase"] == "Aborted", body
    seen_by_b = wait_until(lambda: (_fleet(second.get("/v1/status")[1])["rollout"] or {})
                           .get("phase") == "Aborted" and _fleet(
                               second.get("/v1/status")[1])["rollout"],
                           what="replica B to take the abort")
    assert "another replica" in seen_by_b["reason"], seen_by_b
    wait_until(lambda: on(first, stable) == 2, what="both proxies back on v1")

    cluster.procs.stop("control-b")
    cluster.planes.remove(second)
    second = cluster.control("control-b2", store=store, port=b_port)
    wait_until(lambda: http("GET", second.url + "/healthz")[1] == {"status": "ok"},
               what="B restarted")
    rollout = _fleet(second.get("/v1/status")[1])["rollout"]
    assert (rollout["phase"], rollout["stable"], rollout["candidate"]) == (
        "Aborted", stable, candidate), rollout
    cluster.proxy("proxy-new", second, KEY, cache="cache-new")
    wait_until(lambda: on(second, stable) == 3, timeout=30,
               what="a new proxy of B on the stable version")
    assert on(second, candidate) == 0


@pytest.mark.skipif(ETCD is None, reason="etcd-server (Debian package) is not installed")
def test_a_write_before_the_etcd_watch_starts_is_not_missed(cluster: Cluster) -> None:
    """``changes()`` yields once the watch is created: a resource put between the control
    plane's first listing and its watch (an apply right at its start) is translated, not
    left until the next change (``tests/unit/test_store_changes.py`` for SQLite)."""
    import asyncio

    from propylon.controlplane.etcd_store import EtcdStore
    from tests.support.store_changes import check_a_write_before_the_watch_is_seen

    url = _etcd(cluster)

    async def scenario() -> None:
        store = await EtcdStore.open(url)
        try:
            await check_a_write_before_the_watch_is_seen(store, wait=5.0)
        finally:
            await store.close()

    asyncio.run(scenario())
