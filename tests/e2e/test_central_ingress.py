"""Pattern 3, central ingress + second tier: the outer Gateway (tier 1) enforces the common
policies (API key, rate limit, headers) and forwards by path to two team Gateways (tier 2),
which trust it (``trustedProxies``) and apply their team's policies.

Checked: enforced sections win over a route's own; the service sees the real client IP chain
(a forged X-Forwarded-For is dropped at the edge) and tier 2 keys its rate limit on the real
client, not on the edge's address; request headers are edited edge first then team, response
headers team first then edge. Consumer in its own network namespace; the gateways share one,
the services are in a third."""

from __future__ import annotations

from pathlib import Path

from tests.support.e2e import (
    Procs,
    curl,
    load_example,
    readdress,
    run_gateway,
    wait_port,
    wait_ready,
    write_docs,
)
from tests.support.net import free_port, poll_until
from tests.support.netns import Networks

KEY = "mobile-key-5c1e"


def test_central_ingress_and_second_tier(isolated: tuple[Networks, Procs],
                                         tmp_path: Path) -> None:
    nets, procs = isolated
    svc_a, svc_b, edge, tier_a, tier_b = (free_port() for _ in range(5))
    for name, port in (("service-a", svc_a), ("service-b", svc_b)):
        procs.python(name, "propylon.demo.echo_server", "--host", nets.services_ip,
                     "--port", str(port), "--name", name, ns=nets.services_ns)
    configs = {
        "edge": readdress(load_example("central-ingress/edge"),
                          listeners={"edge/web": (nets.gateway_front_ip, edge)},
                          endpoints={"team-a-gateway": ("127.0.0.1", tier_a),
                                     "team-b-gateway": ("127.0.0.1", tier_b)}),
        "team-a": readdress(load_example("central-ingress/team-a"),
                            listeners={"team-a/web": ("127.0.0.1", tier_a)},
                            endpoints={"service-a": (nets.services_ip, svc_a)}),
        "team-b": readdress(load_example("central-ingress/team-b"),
                            listeners={"team-b/web": ("127.0.0.1", tier_b)},
                            endpoints={"service-b": (nets.services_ip, svc_b)}),
    }
    for port in (svc_a, svc_b):
        wait_port(nets.services_ip, port, ns=nets.services_ns)
    logs, admins = {}, {}
    for name, docs in configs.items():  # the three start together
        config = write_docs(tmp_path / name / "gateway.yaml", docs)
        logs[name], admins[name] = tmp_path / f"{name}-access.log", free_port()
        run_gateway(procs, name, config, admins[name], ns=nets.gateway_ns,
                    env={"MOBILE_APP_KEY": KEY}, access_log=logs[name], wait=False)
    for name, admin in admins.items():
        wait_ready(procs, name, admin, ns=nets.gateway_ns)
    base = f"http://{nets.gateway_front_ip}:{edge}"
    key = ("x-api-key", KEY)

    # tier 1's enforced apiKey applies to every team
    assert curl(base + "/team-a/x", ns=nets.consumer_ns).status == 401
    assert curl(base + "/team-b/x", ns=nets.consumer_ns).status == 401

    reply = curl(base + "/team-b/orders", ns=nets.consumer_ns,
                 headers=[key, ("x-forwarded-for", "6.6.6.6"), ("x-debug", "1"),
                          ("x-policy-trail", "client")])
    assert reply.status == 200, reply
    assert reply.json()["service"] == "service-b" and reply.json()["url"] == "/orders"
    # the client's forged X-Forwarded-For is replaced at the edge; tier 2 appends the edge
    assert reply.echoed("x-forwarded-for") == [f"{nets.consumer_ip}, 127.0.0.1"]
    # request edits: the edge's (enforced, the route's x-edge override lost), then the team's;
    # "add" appends, so the trail shows the order; the client's own value is kept first
    assert reply.echoed("x-edge") == ["central"]
    assert reply.echoed("x-team") == ["b"]
    assert reply.echoed("x-debug") == []
    assert reply.echoed("x-policy-trail") == ["client", "edge", "team-b"]
    assert reply.echoed("x-consumer-name") == ["mobile-app"]  # identified at the edge
    assert reply.echoed("x-api-key") == []                     # credential stops at the edge
    # response edits: the team's first (nearest the service), then the edge's
    assert [v for k, v in reply.headers if k == "x-policy-trail"] == ["team-b", "edge"]

    # tier 2 sees the real client (trustedProxies): its access log and its rate limit
    reply = curl(base + "/team-a/items", ns=nets.consumer_ns, headers=[key])
    assert reply.status == 200 and reply.json()["service"] == "service-a"
    assert reply.echoed("x-policy-trail") == ["edge", "team-a"]
    assert reply.echoed("x-forwarded-for") == [f"{nets.consumer_ip}, 127.0.0.1"]
    poll_until(lambda: f'"client":"{nets.consumer_ip}"' in logs["team-a"].read_text(), 5,
               message="tier 2 access log naming the real client")
    if nets.isolated:
        assert '"client":"127.0.0.1"' not in logs["team-a"].read_text()
    else:  # the consumer's address is 127.0.0.1 too
        nets.skip("tier 2's access log never naming the edge (127.0.0.1) as the client")
    # team A's limit is 2/min per client IP: one spent, one left, then 429 (from tier 2)
    assert curl(base + "/team-a/items", ns=nets.consumer_ns, headers=[key]).status == 200
    assert curl(base + "/team-a/items", ns=nets.consumer_ns, headers=[key]).status == 429
    assert curl(base + "/team-b/items", ns=nets.consumer_ns, headers=[key]).status == 200
    if nets.consumer_ip2:  # another client behind the same edge has its own bucket at tier 2
        other = curl(base + "/team-a/items", ns=nets.consumer_ns, headers=[key],
                     interface=nets.consumer_ip2)
        assert other.status == 200, other
        assert other.echoed("x-forwarded-for") == [f"{nets.consumer_ip2}, 127.0.0.1"]
    else:
        nets.skip("a second client's own rate-limit bucket at tier 2")
    # team B's own policy (requestLimits) is not team A's
    big = curl(base + "/team-b/upload", ns=nets.consumer_ns, method="POST",
               headers=[key, ("content-length", "2048")])
    assert big.status in (0, 413)
