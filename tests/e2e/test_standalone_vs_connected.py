"""Pattern 7, standalone vs connected: the same files served by ``propylon run`` and by the
control plane (``propylon apply`` + ``propylon proxy``) give the same answers: status, body,
response headers, and what the upstream saw (path, headers), minus volatile fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.e2e import (
    Procs,
    Reply,
    curl,
    load_example,
    readdress,
    run_gateway,
    start_control,
    start_proxy,
    wait_port,
    wait_ready,
    write_docs,
)
from tests.support.net import free_port, poll_until

# what may differ between two answers: the date, and the request id each gateway made
VOLATILE = {"date", "x-request-id"}
REQUESTS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("GET", "/api/items?q=1", []),
    ("GET", "/api/items", [("x-version", "2")]),
    ("POST", "/api/orders", [("content-length", "0")]),
    ("GET", "/old-shop", []),
    ("GET", "/healthz", []),
    ("GET", "/nowhere", []),
    ("GET", "/api/x", [("x-forwarded-for", "6.6.6.6")]),
]


def normalise(reply: Reply) -> dict[str, Any]:
    headers = sorted((k, v) for k, v in reply.headers if k not in VOLATILE)
    try:
        body: Any = json.loads(reply.body)
    except ValueError:
        body = reply.body.decode("latin-1")
    if isinstance(body, dict) and isinstance(body.get("headers"), list):  # what the upstream saw
        body["headers"] = [h for h in body["headers"] if h[0] not in VOLATILE]
    return {"status": reply.status, "headers": headers, "body": body}


def test_same_answers_from_files_and_from_control_plane(procs: Procs, tmp_path: Path) -> None:
    api, api_v2 = free_port(), free_port()
    for name, port in (("api", api), ("api-v2", api_v2)):
        procs.python(name, "propylon.demo.echo_server", "--port", str(port), "--name", name)
    standalone_port, connected_port = free_port(), free_port()
    docs = load_example("standalone-vs-connected/config", "shop.yaml")
    endpoints = {"api": ("127.0.0.1", api), "api-v2": ("127.0.0.1", api_v2)}
    files = write_docs(tmp_path / "standalone" / "shop.yaml",
                       readdress(docs, {"web/http": ("127.0.0.1", standalone_port)}, endpoints))
    connected = write_docs(tmp_path / "connected" / "shop.yaml",
                           readdress(docs, {"web/http": ("127.0.0.1", connected_port)},
                                     endpoints))
    for port in (api, api_v2):
        wait_port("127.0.0.1", port)
    standalone_admin = free_port()  # starts while the control plane and the proxy do
    run_gateway(procs, "standalone", files.parent, standalone_admin, wait=False)
    control = start_control(procs, tmp_path, free_port())
    control.apply(connected.parent)
    start_proxy(procs, control, "shop/web", "proxy", tmp_path, free_port())
    wait_ready(procs, "standalone", standalone_admin)
    poll_until(lambda: curl(f"http://127.0.0.1:{connected_port}/healthz",
                            headers=[("host", "shop.example.com")], timeout=2).status == 200,
               15, interval=0.1, message="connected proxy serving")

    compared = 0
    for method, path, headers in REQUESTS:
        answers = []
        for port in (standalone_port, connected_port):
            reply = curl(f"http://127.0.0.1:{port}{path}", method=method,
                         headers=[("host", "shop.example.com"), *headers])
            answers.append(normalise(reply))
        assert answers[0] == answers[1], (method, path, answers)
        assert answers[0]["status"] != 0
        compared += 1
    # and the answers are the interesting ones, not two identical failures
    statuses = [normalise(curl(f"http://127.0.0.1:{connected_port}{p}", method=m,
                               headers=[("host", "shop.example.com"), *h]))["status"]
                for m, p, h in REQUESTS]
    assert statuses == [200, 200, 200, 301, 200, 404, 200], statuses
    print(f"\n[e2e] standalone vs connected: {compared} requests, identical answers")
