"""Reloads do not leak (#15 item 2): a gateway serving 200 Routes is reloaded 30 times between
two versions of one file, and neither the supervisor's nor the worker's RSS keeps growing.

The first reloads may grow the heap (caches reach their size, the allocator's arenas settle),
so growth is measured between the end of a warm-up and the end of the run, against a bound
far below what keeping one configuration per reload would cost (more than 1 MiB each here).
"""

from __future__ import annotations

import signal
import statistics
from pathlib import Path

import pytest

from tests.integration.conftest import GatewayFactory
from tests.support.gateway import Gateway
from tests.support.net import poll_until

pytestmark = pytest.mark.slow

ROUTES = 200
RELOADS = 30
WARM_UP = 10
ALLOWED_GROWTH_KIB = 4 * 1024


def config(port: int, variant: int) -> str:
    docs = [f"""apiVersion: propylon.dev/v1
kind: Gateway
metadata: {{name: edge, namespace: mem}}
spec:
  listeners: [{{name: web, port: {port}, protocol: HTTP}}]
  routeSelector: {{namespaces: [mem]}}
"""]
    for i in range(ROUTES):
        docs.append(f"""apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: r{i}, namespace: mem}}
spec:
  rules:
    - matches: [{{path: {{prefix: /r{i}/api}}, headers: [{{name: x-beta, value: "1"}}]}}]
      directResponse: {{status: 200, body: beta}}
      policies: [{{headers: {{response: {{set: {{x-route: r{i}}}}}}}}}]
    - matches: [{{path: {{exact: /r{i}/ping}}, method: GET}}]
      directResponse: {{status: 200, body: "pong {variant if i == 0 else 0}"}}
""")
    return "---\n".join(docs)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def reload_once(gateway: Gateway, variant: int, done: int) -> None:
    gateway.write_config(lambda port: config(port, variant))
    gateway.signal(signal.SIGHUP)
    poll_until(lambda: gateway.reloads()[0] > done, 60, message=f"reload {done + 1}")


def test_rss_does_not_grow_across_reloads(gateways: GatewayFactory) -> None:
    gateway = gateways(lambda port: config(port, 0), workers=1, access_log=False)
    worker = gateway.worker_pids[0]
    supervisor_rss: list[int] = []
    worker_rss: list[int] = []
    for n in range(RELOADS):
        reload_once(gateway, (n % 2) + 1, n)
        supervisor_rss.append(rss_kib(gateway.pid))
        worker_rss.append(rss_kib(worker))
    assert gateway.worker_pids == [w["pid"] for w in gateway.stats()["workers"]]
    for name, samples in (("supervisor", supervisor_rss), ("worker", worker_rss)):
        settled = statistics.median(samples[WARM_UP - 3:WARM_UP + 2])
        final = statistics.median(samples[-5:])
        assert final - settled < ALLOWED_GROWTH_KIB, (
            f"{name} RSS grew from {settled} to {final} KiB over {RELOADS - WARM_UP} reloads: "
            f"{samples}")
