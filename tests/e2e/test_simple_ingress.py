"""Pattern 1, simple ingress (standalone): consumers outside, services inside, one gateway in
between; routing by path and policies (a per-client rate limit, header edits).

Built on network namespaces (tests/support/netns.py): the consumer cannot reach the services
except through the gateway, which is asserted. On the loopback fallback that check is skipped,
said so (``Networks.skip``); test_loopback_fallback.py runs this pattern that way."""

from __future__ import annotations

from pathlib import Path

from tests.support.e2e import (
    Procs,
    curl,
    load_example,
    readdress,
    run_gateway,
    tcp_connect_fails,
    wait_port,
    write_docs,
)
from tests.support.net import free_port
from tests.support.netns import Networks


def test_simple_ingress(isolated: tuple[Networks, Procs], tmp_path: Path) -> None:
    check_simple_ingress(*isolated, tmp_path)


def check_simple_ingress(nets: Networks, procs: Procs, tmp_path: Path) -> None:
    catalog, orders, listen, admin = free_port(), free_port(), free_port(), free_port()
    for name, port in (("catalog", catalog), ("orders", orders)):
        procs.python(name, "propylon.demo.echo_server", "--host", nets.services_ip,
                     "--port", str(port), "--name", name, ns=nets.services_ns)
    docs = readdress(load_example("simple-ingress"),
                     listeners={"ingress/web": (nets.gateway_front_ip, listen)},
                     endpoints={"catalog": (nets.services_ip, catalog),
                                "orders": (nets.services_ip, orders)})
    config = write_docs(tmp_path / "config" / "gateway.yaml", docs)
    for port in (catalog, orders):
        wait_port(nets.services_ip, port, ns=nets.services_ns)
    run_gateway(procs, "gateway", config, admin, ns=nets.gateway_ns)
    base = f"http://{nets.gateway_front_ip}:{listen}"

    # routing: each prefix reaches its own service, the catalog prefix rewritten
    reply = curl(base + "/catalog/items?page=2", ns=nets.consumer_ns)
    assert reply.status == 200, reply
    assert reply.json()["service"] == "catalog"
    assert reply.json()["url"] == "/items?page=2"
    assert reply.header("x-served-by") == "shop-ingress"  # Gateway-level policy
    assert reply.echoed("x-forwarded-for") == [nets.consumer_ip]

    reply = curl(base + "/orders/42", ns=nets.consumer_ns)
    assert reply.status == 200 and reply.json()["service"] == "orders"
    assert reply.json()["url"] == "/orders/42"
    assert reply.echoed("x-ingress") == ["shop"]  # rule-level policy
    assert curl(base + "/nope", ns=nets.consumer_ns).status == 404

    # the orders rule's rate limit: 5 per minute per client (one already spent above)
    statuses = [curl(base + "/orders/1", ns=nets.consumer_ns).status for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429], statuses
    assert curl(base + "/catalog/x", ns=nets.consumer_ns).status == 200  # other rule unaffected

    # the services are unreachable from the consumer's network except through the gateway
    if nets.isolated:
        assert tcp_connect_fails(nets.services_ip, catalog, ns=nets.consumer_ns)
        assert tcp_connect_fails(nets.services_ip, orders, ns=nets.consumer_ns)
        # ...while they are up (reachable from the gateway's namespace)
        assert not tcp_connect_fails(nets.services_ip, catalog, ns=nets.gateway_ns)
    else:
        nets.skip("services unreachable from the consumer except through the gateway")
