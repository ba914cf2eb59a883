"""examples/cached-api: the cache, compression and transform policies as written, on loopback
ports, with the demo echo service: a miss then a hit per tenant, answers encoded for clients
that accept it (curl --compressed decodes them), a purge through the admin listener, and the
orders API's query and bodies edited."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

from tests.support.e2e import (
    Procs,
    curl,
    load_example,
    readdress,
    run_gateway,
    wait_port,
    write_docs,
)
from tests.support.net import free_port

HOST = ("Host", "api.example.com")


def test_cached_api_example(procs: Procs, tmp_path: Path) -> None:
    catalog, listen, admin = free_port(), free_port(), free_port()
    procs.python("catalog", "propylon.demo.echo_server", "--host", "127.0.0.1",
                 "--port", str(catalog), "--name", "catalog")
    docs = readdress(load_example("cached-api"), listeners={"edge/web": ("127.0.0.1", listen)},
                     endpoints={"catalog": ("127.0.0.1", catalog)})
    config = write_docs(tmp_path / "config" / "gateway.yaml", docs)
    wait_port("127.0.0.1", catalog)
    run_gateway(procs, "gateway", config, admin)
    base = f"http://127.0.0.1:{listen}"

    first = curl(base + "/products/42", headers=[HOST])
    assert first.status == 200 and first.header("x-propylon-cache") == "miss"
    again = curl(base + "/products/42", headers=[HOST])
    assert again.header("x-propylon-cache") == "hit" and again.body == first.body
    tenant = curl(base + "/products/42", headers=[HOST, ("x-tenant", "t2")])
    assert tenant.header("x-propylon-cache") == "miss"  # keyHeaders: another entry

    done = subprocess.run(["curl", "-sS", "--compressed", "-D", "-", "-H", "Host: api.example.com",
                           base + "/products/7"], capture_output=True, timeout=10, check=True)
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    assert b"content-encoding: " in head.lower() and json.loads(body)["url"] == "/products/7"

    request = urllib.request.Request(
        f"http://127.0.0.1:{admin}/cache/purge", method="POST",
        data=json.dumps({"prefix": "api.example.com/products/42"}).encode())
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200
    assert curl(base + "/products/42", headers=[HOST]).header("x-propylon-cache") == "miss"

    order = subprocess.run(
        ["curl", "-sS", "-H", "Host: api.example.com", "-H", "content-type: application/json",
         "--data", '{"id": 1, "internal": "x"}', base + "/orders?debug=1&page=2"],
        capture_output=True, timeout=10, check=True)
    answer_doc = json.loads(order.stdout)
    assert answer_doc["servedBy"] == "edge" and "headers" not in answer_doc
    assert answer_doc["url"] == "/orders?page=2&source=gateway"
    assert answer_doc["body_size"] == len('{"id":1}')
