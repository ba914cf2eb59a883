"""Every PromQL expression of deploy/grafana/ evaluated by a real Prometheus (Debian's) that
scrapes a standalone gateway under traffic, a proxy connected to a control plane, and the
control plane; deploy/prometheus/'s rules checked by promtool and loaded by that Prometheus."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.controlplane.conftest import Cluster
from tests.integration.controlplane.helpers import (
    Processes,
    free_port,
    gateway,
    route,
    served_by,
    upstream,
    wait_until,
)
from tests.support.gateway import REPO, Gateway
from tests.support.observed import answer_by_path, drive_traffic, observed_config
from tests.support.tls import Pki
from tests.support.upstream import ScriptedUpstream

DASHBOARDS = sorted((REPO / "deploy" / "grafana").glob("*.json"))
RULES = REPO / "deploy" / "prometheus" / "rules" / "propylon.rules.yml"
SCRAPE_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
SCRAPE_INTERVAL = "500ms"  # Prometheus takes the eight samples asked for below in 4 s
RATE_WINDOW = "15s"  # $__rate_interval: at least four scrapes, as Grafana makes it
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="Debian's prometheus package (scripts/install-debian-packages) is not installed")


def expressions(document: Any) -> Iterator[str]:
    """Every ``expr`` of the panels and every query of the template variables."""
    if isinstance(document, dict):
        for key, value in document.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(document, list):
        for item in document:
            yield from expressions(item)


def as_promql(expression: str) -> str:
    """Grafana's variables and ``label_values`` in plain PromQL ("All" selected)."""
    expression = re.sub(r"label_values\((.*),\s*(\w+)\)\s*$", r"count by (\2) (\1)", expression)
    expression = expression.replace("$__rate_interval", RATE_WINDOW)
    expression = expression.replace("$__range", "5m")
    return re.sub(r"\$\{?(job|gateway)\}?", ".*", expression)


def all_expressions() -> list[tuple[str, str]]:
    found = []
    for path in DASHBOARDS:
        for expression in dict.fromkeys(expressions(json.loads(path.read_text()))):
            found.append((path.name, expression))
    return found


def query(port: int, promql: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return json.loads(answer.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:  # 400/422: the expression's error, as JSON
        return json.loads(exc.read())  # type: ignore[no-any-return]


def scrape_config(targets: Path) -> str:
    """Each job's targets are read from a file in ``targets`` (``write_targets``), so that
    Prometheus starts (about 5 s) while the processes it will scrape start."""
    def job(name: str) -> str:
        files = json.dumps([str(targets / f"{name}.json")])
        return f"  - {{job_name: {name}, file_sd_configs: [{{files: {files}, " \
               "refresh_interval: 1s}]}\n"

    return (
        f"global: {{scrape_interval: {SCRAPE_INTERVAL}, evaluation_interval: {SCRAPE_INTERVAL}}}\n"
        f"rule_files: [{json.dumps(str(RULES))}]\n"
        "scrape_configs:\n" + job("propylon") + job("propylon-control")
    )


def write_targets(targets: Path, job: str, ports: list[int]) -> None:
    written = targets / f".{job}.tmp"
    written.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}" for port in ports]}]))
    written.replace(targets / f"{job}.json")  # Prometheus never reads half a file


class Traffic:
    """Requests on the gateway, in a thread, until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stopped.is_set():
            drive_traffic(self.port)
            self.stopped.wait(0.2)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(10)


@pytest.fixture(scope="module")
def up(module_upstreams) -> ScriptedUpstream:
    upstream_server = module_upstreams("catalog")
    upstream_server.reset(answer_by_path)
    return upstream_server


@pytest.fixture(scope="module")
def gw(module_gateways, up, tmp_path_factory) -> Gateway:
    cert = Pki(tmp_path_factory.mktemp("pki")).issue("site", "shop.test")
    return module_gateways(observed_config(up.port, cert))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Iterator[tuple[int, int]]:
    """A control plane with one Gateway and a proxy serving it: (control port, proxy admin
    port)."""
    tmp = tmp_path_factory.mktemp("fleet")
    cluster = Cluster(Processes(tmp), tmp)
    try:
        plane = cluster.control()
        port, echo = free_port(), cluster.echo("svc")
        for resource in [gateway("edge", "infra", port, ["shop"]),
                         upstream("svc", "shop", echo), route("main", "shop", "/", "svc")]:
            plane.must_put(resource)
        admin = cluster.proxy("proxy", plane, "infra/edge")
        wait_until(lambda: served_by(port, "/") == (200, "svc"), what="the proxy to serve")
        plane.must_put(route("extra", "shop", "/extra", "svc"))  # a propagation sample
        wait_until(lambda: served_by(port, "/extra")[0] == 200, what="the new route")
        yield int(plane.url.rsplit(":", 1)[1]), admin
    finally:
        cluster.procs.stop_all()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory) -> Iterator[tuple[int, Path]]:
    """Prometheus, scraping nothing yet: (its port, the directory of its target files)."""
    tmp = tmp_path_factory.mktemp("prometheus")
    config, targets = tmp / "prometheus.yml", tmp / "targets"
    targets.mkdir()
    config.write_text(scrape_config(targets))
    port = free_port()
    assert PROMETHEUS is not None
    with open(tmp / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield port, targets
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture(scope="module")
def scraped(prometheus, gw, fleet) -> Iterator[int]:
    """Prometheus once it has scraped every target under traffic for a rate window."""
    port, targets = prometheus  # started first: it starts while the gateways do
    control_port, proxy_admin = fleet
    write_targets(targets, "propylon", [gw.admin_port, proxy_admin])
    write_targets(targets, "propylon-control", [control_port])

    def enough() -> bool:
        answer = query(port, f"min(count_over_time(up[{RATE_WINDOW}]))"
                                   " and on() count(up == 1) == 3")
        result = answer.get("data", {}).get("result", [])
        return bool(result) and float(result[0]["value"][1]) >= 8

    with Traffic(gw.port):
        wait_until(enough, timeout=40, interval=0.5, what="Prometheus to scrape every target")
        yield port


def test_the_dashboards_have_expressions() -> None:
    assert {path.name for path in DASHBOARDS} == {"propylon-overview.json",
                                                  "propylon-control-plane.json"}
    assert len(all_expressions()) >= 40


def test_every_dashboard_expression_has_a_result(scraped) -> None:
    failures = []
    checked = 0
    for dashboard, expression in all_expressions():
        answer = query(scraped, as_promql(expression))
        checked += 1
        if answer.get("status") != "success":
            failures.append(f"{dashboard}: {expression}: {answer.get('error')}")
        elif not answer["data"]["result"]:
            failures.append(f"{dashboard}: {expression}: empty result")
    assert not failures, "\n".join(failures)
    assert checked == len(all_expressions())


def test_the_alert_rules_load_and_evaluate(scraped) -> None:
    checked = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True,
                             text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{scraped}/api/v1/rules", timeout=10) as a:
        groups = json.loads(a.read())["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    found = re.search(r"(\d+) rules found", checked.stdout)
    assert found is not None and len(rules) == int(found.group(1))
    assert all(rule["health"] in ("ok", "unknown") for rule in rules), rules
    assert {rule["name"] for rule in rules} >= {
        "PropylonHighErrorRatio", "PropylonUpstreamDown", "PropylonConfigRefused",
        "PropylonCertificateExpiresSoon"}


def test_the_example_scrape_config_is_valid() -> None:
    checked = subprocess.run([PROMTOOL, "check", "config", str(SCRAPE_CONFIG)],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_expressions_are_found_in_nested_panels() -> None:
    document = {"panels": [{"targets": [{"expr": "a"}]},
                           {"panels": [{"targets": [{"expr": "b"}]}]}],
                "templating": {"list": [{"definition": "label_values(m{x=\"$job\"}, y)"}]}}
    assert list(expressions(document)) == ["a", "b", 'label_values(m{x="$job"}, y)']
    assert as_promql('label_values(m{x=~"$job"}, y)') == 'count by (y) (m{x=~".*"})'
