"""A gateway configuration that produces every kind of proxy metric, and traffic for it.

Used by the metrics tests and the dashboard test: a forwarded rule, a rate-limited one, an
API-key one, a direct response, an HTTPS listener (certificate expiry), and an upstream
that answers 200, 404 and 503 by path.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.support import resources as r
from tests.support.client import roundtrip
from tests.support.net import free_port
from tests.support.tls import CertFiles
from tests.support.upstream import RecordedRequest, Reply, echo_reply

HOST = "shop.test"


def answer_by_path(request: RecordedRequest) -> Reply:
    """``/api/status/NNN`` answers NNN; anything else is echoed with 200."""
    parts = request.path.split("/")
    if len(parts) == 4 and parts[2] == "status" and parts[3].isdigit():
        return Reply(status=int(parts[3]), body=b"as asked\n")
    return echo_reply(request)


def observed_config(upstream_port: int, cert: CertFiles) -> Callable[[int], str]:
    tls_port = free_port()

    def build(port: int) -> str:
        gateway = r.gateway(port)
        gateway["spec"]["listeners"].append({
            "name": "websecure", "port": tls_port, "protocol": "HTTPS",
            "address": "127.0.0.1",
            "tls": {"certificates": [{"certFile": str(cert.cert), "keyFile": str(cert.key)}]},
        })
        return r.dump(
            gateway,
            r.route("shop", hostnames=[HOST], rules=[
                r.rule({"prefix": "/api"}, name="api", forward=r.forward("catalog")),
                r.rule({"prefix": "/limited"}, name="limited", forward=r.forward("catalog"),
                       policies=[{"rateLimit": {"limits": [{"requests": 1, "per": "1h"}]}}]),
                r.rule({"prefix": "/private"}, name="private", forward=r.forward("catalog"),
                       policies=[{"apiKey": {"header": "x-api-key"}}]),
                r.rule({"exact": "/teapot"}, name="teapot",
                       directResponse={"status": 418, "body": "short and stout"}),
            ]),
            r.upstream("catalog", upstream_port),
        )

    return build


def drive_traffic(port: int, rounds: int = 1) -> None:
    """Requests that touch every series: statuses 200/404/503/418/429/401, bodies both
    ways, no route matched."""
    for _ in range(rounds):
        assert roundtrip(port, "GET", "/api/items", host=HOST).status == 200
        assert roundtrip(port, "POST", "/api/items", body=b"x" * 1000, host=HOST).status == 200
        assert roundtrip(port, "GET", "/api/status/404", host=HOST).status == 404
        assert roundtrip(port, "GET", "/api/status/503", host=HOST).status == 503
        assert roundtrip(port, "GET", "/teapot", host=HOST).status == 418
        roundtrip(port, "GET", "/limited", host=HOST)
        assert roundtrip(port, "GET", "/limited", host=HOST).status == 429
        assert roundtrip(port, "GET", "/private", host=HOST).status == 401
        assert roundtrip(port, "GET", "/nowhere", host="unknown.test").status == 404
