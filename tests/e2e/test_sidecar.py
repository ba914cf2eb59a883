"""Pattern 5, sidecar / microgateway: ``propylon sidecar`` in front of a local app with the
team's policies (API key with a Consumer, per-consumer rate limit, header edits)."""

from __future__ import annotations

from tests.support.e2e import EXAMPLES, Procs, curl, wait_http, wait_port
from tests.support.net import free_port

KEY = "sidecar-key-2b7d41"


def test_sidecar(procs: Procs) -> None:
    app, listen, admin = free_port(), free_port(), free_port()
    procs.python("app", "propylon.demo.echo_server", "--port", str(app), "--name", "orders")
    wait_port("127.0.0.1", app)
    procs.python("sidecar", "propylon", "sidecar", "--app-port", str(app),
                 "--listen", f"127.0.0.1:{listen}", "--admin", f"127.0.0.1:{admin}",
                 "--policy", str(EXAMPLES / "sidecar" / "policy.yaml"),
                 env={"ORDERS_WEB_KEY": KEY})
    wait_http(f"http://127.0.0.1:{admin}/ready", alive=lambda: procs.alive("sidecar"))
    base = f"http://127.0.0.1:{listen}"

    assert curl(base + "/orders").status == 401
    assert curl(base + "/orders", headers=[("x-api-key", "wrong")]).status == 401

    reply = curl(base + "/orders/9", headers=[("x-api-key", KEY),
                                               ("x-consumer-name", "forged")])
    assert reply.status == 200, reply
    assert reply.json()["service"] == "orders" and reply.json()["url"] == "/orders/9"
    assert reply.echoed("x-consumer-name") == ["web-frontend"]
    assert reply.echoed("x-consumer-labels") == ["tier=frontend"]
    assert reply.echoed("x-api-key") == []  # the credential is not passed to the app
    assert reply.echoed("x-sidecar") == ["orders"]
    assert reply.header("x-served-by") == "orders-sidecar"
    assert reply.header("ratelimit-limit") == "10"

    statuses = [curl(base + "/o", headers=[("x-api-key", KEY)]).status for _ in range(10)]
    assert statuses == [200] * 9 + [429], statuses
