"""Central ingress: any proxy (#20 item 3). A real HAProxy in front of Propylon, two ways:
in TCP mode sending a PROXY v2 header to a listener that requires one, and in HTTP mode
adding X-Forwarded-For in front of another listener (``trustedProxies``).

Checked through both paths: the upstream and the access log see the real client address (not
HAProxy's); an ipFilter on the client address lets the allowed client through and answers 403
to another; a client connecting straight to the PROXY-required listener is closed without an
answer and counted. HAProxy and the gateway share the gateway namespace, the clients (two
addresses) are in the consumer namespace, the service in the services namespace. On the
loopback fallback the two clients are 127.0.0.2 and 127.0.0.3, HAProxy and the gateway
127.0.0.1, so every check still runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.e2e import (
    EXAMPLES,
    Procs,
    curl,
    find,
    load_example,
    readdress,
    run_gateway,
    wait_http,
    wait_port,
    write_docs,
)
from tests.support.gateway import metric_value
from tests.support.net import free_port, poll_until
from tests.support.netns import Networks

PATTERN = "central-ingress-haproxy"
pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None,
                                reason="haproxy (Debian package) not installed")


def access_log_entries(path: Path) -> list[dict]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_central_ingress_behind_haproxy(isolated: tuple[Networks, Procs],
                                        tmp_path: Path) -> None:
    nets, procs = isolated
    allowed, denied = ((nets.consumer_ip, nets.consumer_ip2) if nets.consumer_ip2
                       else ("127.0.0.2", "127.0.0.3"))
    front = nets.gateway_front_ip
    svc, gw_l4, gw_l7, ha_l4, ha_l7, admin = (free_port() for _ in range(6))

    procs.python("service", "propylon.demo.echo_server", "--host", nets.services_ip,
                 "--port", str(svc), "--name", "service", ns=nets.services_ns)
    docs = readdress(load_example(PATTERN),
                     listeners={"behind-haproxy/behind-l4": (front, gw_l4),
                                "behind-haproxy/behind-l7": ("127.0.0.1", gw_l7)},
                     endpoints={"service": (nets.services_ip, svc)})
    # HAProxy reaches the PROXY listener from the address it connects to; the office is the
    # allowed client's address
    gateway = find(docs, "Gateway", "behind-haproxy")
    gateway["spec"]["listeners"][0]["proxyProtocol"]["trustedSources"] = [f"{front}/32"]
    route = find(docs, "Route", "service")
    route["spec"]["rules"][0]["policies"] = [{"ipFilter": {"allow": [f"{allowed}/32"]}}]
    config = write_docs(tmp_path / "config" / "gateway.yaml", docs)
    log = tmp_path / "access.log"
    wait_port(nets.services_ip, svc, ns=nets.services_ns)
    run_gateway(procs, "gateway", config, admin, ns=nets.gateway_ns, access_log=log)
    procs.start("haproxy", ["haproxy", "-db", "-f", str(EXAMPLES / PATTERN / "haproxy.cfg")],
                ns=nets.gateway_ns,
                env={"L4_BIND": f"{front}:{ha_l4}", "L4_GATEWAY": f"{front}:{gw_l4}",
                     "L7_BIND": f"{front}:{ha_l7}", "L7_GATEWAY": f"127.0.0.1:{gw_l7}"})
    paths = {"l4": f"http://{front}:{ha_l4}", "l7": f"http://{front}:{ha_l7}"}
    for base in paths.values():
        wait_http(base + "/public/ready", ns=nets.consumer_ns, interface=allowed,
                  alive=lambda: procs.alive("haproxy"))

    def forwarded_for(way: str, client: str) -> list[str]:
        """X-Forwarded-For at the service: behind the L4 path the PROXY header's source is
        the connection's client; behind the L7 path HAProxy's field names the client and
        the gateway appends HAProxy, its peer."""
        return [client] if way == "l4" else [f"{client}, 127.0.0.1"]

    for way, base in paths.items():
        # the service sees the real client, and only it decides the ipFilter
        reply = curl(f"{base}/internal/{way}", ns=nets.consumer_ns, interface=allowed)
        assert reply.status == 200, (way, reply, procs.log("haproxy")[-2000:])
        assert reply.echoed("x-forwarded-for") == forwarded_for(way, allowed)
        refused = curl(f"{base}/internal/{way}", ns=nets.consumer_ns, interface=denied)
        assert refused.status == 403, (way, refused)
        public = curl(f"{base}/public/{way}", ns=nets.consumer_ns, interface=denied)
        assert public.status == 200, (way, public)  # the filter, not the network, refused
        assert public.echoed("x-forwarded-for") == forwarded_for(way, denied)

    # a client forging X-Forwarded-For in front of HAProxy's HTTP mode changes nothing: the
    # right-most untrusted entry (HAProxy's, naming the real client) is the client
    forged = curl(paths["l7"] + "/internal/forged", ns=nets.consumer_ns, interface=denied,
                  headers=[("x-forwarded-for", allowed)])
    assert forged.status == 403, forged

    # the access log names the real client on both paths, never HAProxy's address
    def logged() -> list[dict]:
        entries = [e for e in access_log_entries(log) if "/ready" not in e.get("path", "")]
        return entries if len(entries) >= 7 else []

    entries = poll_until(logged, 10, message="access log entries of the requests")
    by_path = {(e["path"], e["status"]): e for e in entries}
    for way in paths:
        assert by_path[(f"/internal/{way}", 200)]["client"] == allowed
        assert by_path[(f"/internal/{way}", 403)]["client"] == denied
        assert by_path[(f"/public/{way}", 200)]["client"] == denied
    assert {e["client"] for e in entries} <= {allowed, denied}
    # behind the L4 path the log also names the balancer the PROXY header came from
    proxy = by_path[("/internal/l4", 200)].get("proxy")
    assert proxy is not None and proxy.get("balancer", "").startswith(front), proxy

    # straight to the PROXY-required listener, bypassing HAProxy: closed, no answer, counted
    direct = curl(f"http://{front}:{gw_l4}/public/direct", ns=nets.consumer_ns,
                  interface=allowed)
    assert direct.status == 0 and direct.body == b"", direct

    def refused_untrusted() -> float:  # the client's address is not HAProxy's
        metrics = curl(f"http://127.0.0.1:{admin}/metrics", ns=nets.gateway_ns)
        return metric_value(metrics.body.decode(), "propylon_proxy_protocol_refused_total",
                            listener=f"{front}:{gw_l4}", reason="untrusted")

    poll_until(lambda: refused_untrusted() >= 1, 5, message="the refusal counted")
    assert not any(e["path"] == "/public/direct" for e in access_log_entries(log))
