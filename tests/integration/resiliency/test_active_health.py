"""Active health checks: thresholds both ways, no traffic while unhealthy, one prober per
proxy whatever the worker count, TCP checks, and probes over TLS for a TLS upstream."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.integration.resiliency.conftest import endpoints, healthy_gauge
from tests.support import resources as r
from tests.support.client import RawClient
from tests.support.gateway import Gateway
from tests.support.net import poll_until
from tests.support.tls import Pki, TLSUpstream
from tests.support.upstream import RecordedRequest, Reply, ScriptedUpstream

INTERVAL = 0.2


def active(**extra) -> dict:
    spec = {"interval": "200ms", "intervalJitter": "20ms", "timeout": "300ms",
            "healthyThreshold": 2, "unhealthyThreshold": 3, "path": "/healthz"}
    return {"active": {**spec, **extra}}


class Switchable:
    """A handler whose /healthz answers 200 or 503 on demand; other paths are echoed."""

    def __init__(self, upstream: ScriptedUpstream) -> None:
        self.upstream = upstream
        self.failing = False
        upstream.handler = self

    def __call__(self, request: RecordedRequest) -> Reply:
        if request.path == "/healthz":
            return Reply(status=503 if self.failing else 200, body=b"hc")
        return self.upstream.echo(request)

    def probes(self) -> list[RecordedRequest]:
        return [q for q in self.upstream.requests if q.path == "/healthz"]


def served_by(port: int, host: str, count: int, new_connections: bool = False) -> Counter:
    names: Counter = Counter()
    client = RawClient(port)
    try:
        for _ in range(count):
            if new_connections:
                client.close()
                client = RawClient(port)
            client.request("GET", "/work", host=host)
            response = client.read_final()
            assert response.status == 200, response
            names[response.header("x-upstream")] += 1
    finally:
        client.close()
    return names


@pytest.fixture(scope="module")
def ups(module_upstreams):
    return [module_upstreams(name) for name in ("a", "b")]


@pytest.fixture(scope="module")
def gw(module_gateways, ups) -> Gateway:
    a, b = ups
    return module_gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("hc", hostnames=["hc.test"], rules=[r.rule(forward=r.forward("hc"))]),
        r.upstream("hc", a.port, b.port, healthCheck=active()),
    ))


def test_unhealthy_after_threshold_no_traffic_then_readmitted(gw, ups, figure) -> None:
    a, b = ups
    switch_a, switch_b = Switchable(a), Switchable(b)
    poll_until(lambda: len(switch_b.probes()) >= 2, 5, message="probes reach b")
    assert healthy_gauge(gw, "default/hc", b.port) == 1
    assert served_by(gw.port, "hc.test", 10) == {"a": 5, "b": 5}

    before = len(switch_b.probes())
    switch_b.failing = True
    started = time.monotonic()
    poll_until(lambda: not endpoints(gw, "default/hc")[b.port]["healthy"], 5,
               interval=0.02, message="b marked unhealthy")
    took = time.monotonic() - started
    failed_probes = len(switch_b.probes()) - before
    figure("probes failed before unhealthy verdict", failed_probes)
    figure("seconds to unhealthy verdict", round(took, 2))
    assert failed_probes >= 3, "marked unhealthy before unhealthyThreshold probes failed"
    assert took < 3 * INTERVAL * 3
    assert healthy_gauge(gw, "default/hc", b.port) == 0
    assert healthy_gauge(gw, "default/hc", a.port) == 1

    seen = served_by(gw.port, "hc.test", 20)
    assert seen == {"a": 20}, "an unhealthy endpoint still got traffic"

    before = len(switch_b.probes())
    switch_b.failing = False
    started = time.monotonic()
    poll_until(lambda: endpoints(gw, "default/hc")[b.port]["healthy"], 5,
               interval=0.02, message="b readmitted")
    passed_probes = len(switch_b.probes()) - before
    figure("probes passed before readmission", passed_probes)
    figure("seconds to readmission", round(time.monotonic() - started, 2))
    assert passed_probes >= 2
    assert healthy_gauge(gw, "default/hc", b.port) == 1
    assert served_by(gw.port, "hc.test", 10) == {"a": 5, "b": 5}
    assert switch_a.probes(), "a was never probed"


def test_checks_run_once_per_proxy_not_per_worker(gateways, upstreams, figure) -> None:
    a, b = upstreams("a"), upstreams("b")
    switch_a, switch_b = Switchable(a), Switchable(b)
    gw = gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("hc", hostnames=["hc.test"], rules=[r.rule(forward=r.forward("hc"))]),
        r.upstream("hc", a.port, b.port, healthCheck=active()),
    ), workers=2)
    assert len(gw.worker_pids) == 2
    poll_until(lambda: len(switch_a.probes()) >= 1, 5, message="first probe")
    window = 2.0
    before = len(switch_a.probes())
    time.sleep(window)
    probes = len(switch_a.probes()) - before
    expected = window / (INTERVAL + 0.01)
    figure("probes at one endpoint in 2.0s (interval 200ms, 2 workers)", probes)
    figure("probes expected once per proxy", round(expected, 1))
    assert 0.6 * expected <= probes <= 1.3 * expected, (
        f"{probes} probes in {window}s: one prober per worker?")
    # every worker acts on the verdict: new connections land on both workers
    switch_b.failing = True
    poll_until(lambda: healthy_gauge(gw, "default/hc", b.port) == 0, 5, message="b unhealthy")
    assert served_by(gw.port, "hc.test", 40, new_connections=True) == {"a": 40}
    switch_b.failing = False
    poll_until(lambda: healthy_gauge(gw, "default/hc", b.port) == 1, 5, message="b healthy")
    assert set(served_by(gw.port, "hc.test", 40, new_connections=True)) == {"a", "b"}


def test_tcp_check_follows_the_listener(gateways, upstreams, proc_upstreams, figure) -> None:
    a = upstreams("a")
    c = proc_upstreams("c")
    gw = gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("tcp", hostnames=["tcp.test"], rules=[r.rule(forward=r.forward("tcp"))]),
        r.upstream("tcp", a.port, c.port, healthCheck=active(type="tcp")),
    ))
    assert set(served_by(gw.port, "tcp.test", 10)) == {"a", "c"}
    c.kill()
    started = time.monotonic()
    poll_until(lambda: healthy_gauge(gw, "default/tcp", c.port) == 0, 5, message="c unhealthy")
    took = round(time.monotonic() - started, 2)
    figure("seconds to unhealthy after the process was killed", took)
    assert served_by(gw.port, "tcp.test", 10) == {"a": 10}
    proc_upstreams("c", port=c.port)
    poll_until(lambda: healthy_gauge(gw, "default/tcp", c.port) == 1, 5, message="c back")
    assert set(served_by(gw.port, "tcp.test", 10)) == {"a", "c"}
    assert not any(q.path == "/healthz" for q in a.requests), "a TCP check sent HTTP"


def test_tls_upstream_is_probed_over_tls(gateways, tmp_path) -> None:
    pki = Pki(tmp_path / "pki")
    cert = pki.issue("mesh", "mesh.internal")
    secure = TLSUpstream("secure", cert).start()
    try:
        switch = Switchable(secure)
        gw = gateways(lambda port: r.dump(
            r.gateway(port),
            r.route("tls", hostnames=["tls.test"], rules=[r.rule(forward=r.forward("tls"))]),
            r.upstream("tls", secure.port, healthCheck=active(),
                       tls={"sni": "mesh.internal", "caFile": str(pki.ca_file)}),
        ))
        poll_until(lambda: len(switch.probes()) >= 3, 5, message="TLS probes answered")
        assert secure.handshake_failures == 0
        assert endpoints(gw, "default/tls")[secure.port]["healthy"]
        assert switch.probes()[-1].header("user-agent") == "propylon-health-check"
        switch.failing = True
        poll_until(lambda: healthy_gauge(gw, "default/tls", secure.port) == 0, 5,
                   message="TLS endpoint unhealthy")
    finally:
        secure.stop()
