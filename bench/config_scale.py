"""Configuration at scale (issue #15): how long a large configuration takes to check, to start
serving, and to change, and how much memory it holds. Not a test. Run

    python bench/config_scale.py --routes 1000 [--delegation] [--workers 1] [--reloads 50]
    python bench/config_scale.py --routes 10000 --gateway-api [--sections]
    python bench/config_scale.py --routes 10000 --ingress
    python bench/config_scale.py --routes 10000 --phases      # in-process stage timings
    python bench/config_scale.py --routes 10000 --rounds 6 --against ../main-checkout

It writes a configuration into a temporary folder: one Gateway, one Upstream (a local echo
server), ``--routes`` Routes of 4 rules each (prefix, exact with a method, header-conditioned,
direct response) in files of 100 resources. With ``--delegation`` the same count of
RouteTables (4 rules each) is reached from one Route per 10 tables, each delegating a prefix
by label. With ``--gateway-api`` the Gateway and the routes are Kubernetes Gateway API
objects (a Gateway of class propylon, HTTPRoutes of the same 4 matches, each to the Upstream
by a backendRef, the header-conditioned one with a ResponseHeaderModifier), as ``kubectl get
-o yaml`` would give them; ``--sections`` gives the Gateway two listeners on the port (one
for ``*.example.com``) and attaches each route to one of them by ``sectionName``. With
``--ingress`` the routes are Ingresses of class propylon (4 paths each, any host, to a
Service whose EndpointSlice is the echo server) served by a propylon.dev/v1 Gateway.
Then it measures, printing one line per figure:

- ``validate``: ``propylon validate FOLDER`` wall time;
- ``start``: from launching ``propylon run`` to the first 200 on the listener;
- ``admin /config``: the time and size of the admin listener's dump of the IR served;
- ``change``: a file of the folder rewritten with one more route (the watcher picks it up),
  until the supervisor logs the version installed on every worker (it logs only once all of
  them answered ``ack``), then until the new route answers; median and max of ``--changes``;
- ``upstream edit``: the Upstream's connect timeout changed in the Gateway's file, until
  installed on every worker (not with ``--ingress``, whose backend is a Service);
- ``balancing edit``, ``listener edit``: the Upstream's panic threshold, the Gateway's
  listener limit changed in the Gateway's file (with ``--gateway-api``: a listener added
  on another port), until installed on every worker;
- ``policy edit`` (native shapes): a Policy targeting one Route (with ``--delegation``, a
  delegating Route) written in a file of its own, then edited, until the edit is served;
- ``gateway policy edit`` (native shapes): the Gateway's own policies (a response header
  set on every answer) edited in its file, until the new value is served (every rule's
  policies change);
- ``consumer edit`` (native shapes, last: it adds an apiKey policy to the Gateway's): a
  Consumer's key changed, until the new key is admitted and the old one refused;
- ``table edit`` (``--delegation``): a RouteTable's first prefix changed in its file of 100
  (in the middle of the files), until installed on every worker and served;
- RSS of the supervisor and of each worker after start, after the changes, and after
  ``--reloads`` more changes alternating between two versions of one file (growth there is
  a leak: the same two configurations are installed again and again).

``--rounds N`` measures ``validate`` and ``start`` N times (median and range: this machine's
speed varies by a third from one minute to the next; ``machine speed`` is a fixed workload
timed before each round, to compare figures taken in different minutes); ``--against TREE``
measures another checkout's too, alternated with this one's in each round (an A/B in the
same minutes).
``--phases`` runs the stages in this process instead (load, translate, policy check, compile,
IR encode/decode) and prints each one's time: what to profile. Every process started is
stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PER_FILE = 100
NAMESPACE = "bench"
_INSTALLED = re.compile(r"configuration (\w+) installed on (\d+) worker")


# -- the configuration ---------------------------------------------------------------------
# what the configuration is written as: "routes", "delegation", "gateway-api",
# "gateway-api-sections" or "ingress" (set from the command line)
SHAPE = "routes"


def gateway_yaml(port: int, echo: int) -> str:
    if SHAPE.startswith("gateway-api"):
        return k8s_gateway_yaml(port, echo)
    if SHAPE == "ingress":
        return ingress_gateway_yaml(port, echo)
    return f"""apiVersion: propylon.dev/v1
kind: Gateway
metadata: {{name: edge, namespace: {NAMESPACE}}}
spec:
  listeners: [{{name: web, port: {port}, protocol: HTTP}}]
  routeSelector: {{namespaces: [{NAMESPACE}]}}
---
""" + upstream_yaml(echo)


def upstream_yaml(echo: int) -> str:
    return f"""apiVersion: propylon.dev/v1
kind: Upstream
metadata: {{name: echo, namespace: {NAMESPACE}}}
spec:
  endpoints: [{{address: 127.0.0.1, port: {echo}}}]
"""


def rules_yaml(prefix: str) -> str:
    return f"""  rules:
    - matches: [{{path: {{prefix: {prefix}/api}}}}]
      forward: {{backends: [{{upstream: echo}}], timeout: 5s}}
    - matches: [{{path: {{exact: {prefix}/item}}, method: GET}}]
      forward: {{backends: [{{upstream: echo}}]}}
    - matches: [{{path: {{prefix: {prefix}/beta}}, headers: [{{name: x-beta, value: "1"}}]}}]
      forward: {{backends: [{{upstream: echo}}]}}
      policies: [{{headers: {{response: {{set: {{x-beta: "yes"}}}}}}}}]
    - matches: [{{path: {{exact: {prefix}/ping}}}}]
      directResponse: {{status: 200, body: pong}}
"""


def route_yaml(i: int) -> str:
    if SHAPE.startswith("gateway-api"):
        return http_route_yaml(i)
    if SHAPE == "ingress":
        return ingress_yaml(i)
    return (f"apiVersion: propylon.dev/v1\nkind: Route\nmetadata: {{name: r{i}, namespace: "
            f"{NAMESPACE}}}\nspec:\n" + rules_yaml(f"/r{i}"))


def k8s_gateway_yaml(port: int, echo: int) -> str:
    other = (f"\n    - {{name: web-example, port: {port}, protocol: HTTP, "
             "hostname: '*.example.com', allowedRoutes: {namespaces: {from: Same}}}"
             if SHAPE == "gateway-api-sections" else "")
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: {NAMESPACE}}}
spec:
  gatewayClassName: propylon
  listeners:
    - {{name: web, port: {port}, protocol: HTTP,
       allowedRoutes: {{namespaces: {{from: Same}}}}}}{other}
---
""" + upstream_yaml(echo)


def http_route_yaml(i: int) -> str:
    """An HTTPRoute of the 4 matches of ``rules_yaml``; with sections, on listener ``web``
    (the probes' host) or, every other one, ``web-example`` (the changes' are on ``web``)."""
    example = i % 2 and i < 1_000_000
    section = ("" if SHAPE != "gateway-api-sections"
               else f", sectionName: {'web-example' if example else 'web'}")
    backend = "backendRefs: [{name: echo, port: 80}]"
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r{i}, namespace: {NAMESPACE}}}
spec:
  parentRefs: [{{name: edge{section}}}]
  rules:
    - matches: [{{path: {{type: PathPrefix, value: /r{i}/api}}}}]
      {backend}
      timeouts: {{request: 5s}}
    - matches: [{{path: {{type: Exact, value: /r{i}/item}}, method: GET}}]
      {backend}
    - matches: [{{path: {{type: PathPrefix, value: /r{i}/beta}},
                  headers: [{{name: x-beta, value: "1"}}]}}]
      {backend}
      filters: [{{type: ResponseHeaderModifier,
                 responseHeaderModifier: {{set: [{{name: x-beta, value: "yes"}}]}}}}]
    - matches: [{{path: {{type: Exact, value: /r{i}/ping}}}}]
      {backend}
"""


def ingress_gateway_yaml(port: int, echo: int) -> str:
    """A propylon.dev/v1 Gateway serving the Ingresses of class propylon, and the Service
    they name (with its EndpointSlice: the echo server)."""
    return f"""apiVersion: propylon.dev/v1
kind: Gateway
metadata: {{name: edge, namespace: {NAMESPACE}}}
spec:
  listeners: [{{name: web, port: {port}, protocol: HTTP}}]
  routeSelector: {{namespaces: [{NAMESPACE}],
                  matchLabels: {{propylon.dev/ingress-class: propylon}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {NAMESPACE}}}
spec:
  ports: [{{name: http, port: 80, targetPort: {echo}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo-1, namespace: {NAMESPACE},
           labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
ports: [{{name: http, port: {echo}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
"""


def ingress_yaml(i: int) -> str:
    """An Ingress of 4 paths (two Prefix, two Exact) to the Service, on any host."""
    backend = "backend: {service: {name: echo, port: {number: 80}}}"
    paths = "".join(f"""
          - {{path: /r{i}/{name}, pathType: {kind}, {backend}}}"""
                    for name, kind in (("api", "Prefix"), ("item", "Exact"),
                                       ("beta", "Prefix"), ("ping", "Exact")))
    return f"""apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: r{i}, namespace: {NAMESPACE}}}
spec:
  ingressClassName: propylon
  rules:
    - http:
        paths:{paths}
"""


def table_yaml(i: int) -> str:
    return (f"apiVersion: propylon.dev/v1\nkind: RouteTable\nmetadata: {{name: t{i}, namespace: "
            f"{NAMESPACE}, labels: {{group: g{i // 10}}}}}\nspec:\n"
            + rules_yaml(f"/g{i // 10}/t{i}"))


def delegating_route_yaml(group: int) -> str:
    return f"""apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: d{group}, namespace: {NAMESPACE}}}
spec:
  rules:
    - matches: [{{path: {{prefix: /g{group}}}}}]
      delegate: {{selector: {{matchLabels: {{group: g{group}}}}}}}
"""


def documents(count: int) -> list[str]:
    if SHAPE != "delegation":
        return [route_yaml(i) for i in range(count)]
    return ([table_yaml(i) for i in range(count)]
            + [delegating_route_yaml(g) for g in range((count + 9) // 10)])


def write_config(folder: Path, count: int, port: int, echo: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gateway.yaml").write_text(gateway_yaml(port, echo))
    docs = documents(count)
    for start in range(0, len(docs), PER_FILE):
        text = "---\n".join(docs[start:start + PER_FILE])
        (folder / f"routes-{start // PER_FILE:04d}.yaml").write_text(text)


def write_change(folder: Path, extra: int) -> str:
    """Replace ``change.yaml`` atomically with one Route; its probe path."""
    tmp = folder.parent / ".change.tmp"
    tmp.write_text(route_yaml(1_000_000 + extra))
    os.replace(tmp, folder / "change.yaml")
    return f"/r{1_000_000 + extra}/ping"


# -- processes -----------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str, timeout: float = 2.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def response_header(port: int, path: str, name: str) -> str | None:
    """Header ``name`` of the answer to a GET of ``path`` on the listener."""
    with contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=2)) as c:
        c.request("GET", path)
        response = c.getresponse()
        response.read()
        return response.getheader(name)


def answers(port: int, path: str) -> bool:
    try:
        return get(port, path) == 200
    except OSError:
        return False


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


class LogWatch:
    """Reads the gateway's stderr on a thread, noting when each version was installed."""

    def __init__(self, stream: object) -> None:
        self.installed: list[tuple[str, float]] = []  # (version, when), in log order
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: object) -> None:
        for raw in stream:  # type: ignore[attr-defined]
            line = raw.decode(errors="replace")
            self.lines.append(line)
            found = _INSTALLED.search(line)
            if found:
                self.installed.append((found.group(1), time.perf_counter()))

    def wait_new(self, seen: int, timeout: float) -> tuple[str, float]:
        """The first install logged after the first ``seen`` ones."""
        deadline = time.monotonic() + timeout
        lines = len(self.lines)
        while time.monotonic() < deadline:
            if len(self.installed) > seen:
                return self.installed[seen]
            if any("refused" in line for line in self.lines[lines:]):
                raise RuntimeError("the change was refused:\n" + "".join(self.lines[lines:]))
            time.sleep(0.005)
        raise TimeoutError("no new version installed:\n" + "".join(self.lines[-20:]))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
            if int(stat[1]) == pid and b"resource_tracker" not in cmdline:
                found.append(int(entry.name))
    return sorted(found)


def memory(pid: int) -> str:
    workers = ", ".join(f"{rss_kib(w) / 1024:.0f}" for w in children(pid))
    return f"supervisor {rss_kib(pid) / 1024:.0f} MiB, workers [{workers}] MiB"


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} on {os.cpu_count()} cores"


_REFERENCE_DATA = [{"name": f"r{i}", "rules": [
    {"matches": [{"path": {"prefix": f"/r{i}/api"}}], "forward": {"backends": [{"upstream": "e"}]}}
    for _ in range(4)]} for i in range(2000)]


def reference_seconds() -> float:
    """A fixed pure-Python workload on one core (JSON of route-like data), timed in this
    process: the machine's speed in the minute it ran (it varies by a third here), to set
    beside the figures measured in the same rounds."""
    start = time.perf_counter()
    for _ in range(5):
        json.loads(json.dumps(_REFERENCE_DATA))
    return time.perf_counter() - start


# -- the measurements ----------------------------------------------------------------------
def measure_validate(folder: Path, tree: Path = REPO) -> tuple[float, float]:
    """``propylon validate`` of ``folder`` with the package of ``tree``: wall and cpu time."""
    before = os.times()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "propylon", "validate", str(folder)],
                          cwd=tree, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    after = os.times()
    if done.returncode != 0:
        raise SystemExit(f"validate failed:\n{done.stderr[-2000:]}")
    cpu = (after.children_user - before.children_user
           + after.children_system - before.children_system)
    return took, cpu


def spread(label: str, figures: list[float], what: str = "") -> str:
    """One figure as is; several as their median, range and count (this machine's speed
    varies by a third from one minute to the next: one round proves little)."""
    if len(figures) == 1:
        return f"{label:<15} {figures[0]:8.2f} s{what}"
    return (f"{label:<15} median {statistics.median(figures):.2f} s  ({min(figures):.2f}-"
            f"{max(figures):.2f} s over {len(figures)} rounds){what}")


def trees_in_rounds(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """The trees measured in each round, this one last (its gateway is kept running)."""
    against = [("against", Path(args.against).resolve())] if args.against else []
    return [*against, ("this", REPO)]


def in_order(trees: list[tuple[str, Path]], round_: int, rounds: int
             ) -> list[tuple[str, Path]]:
    """``trees`` in the order of ``round_``: reversed every other round (the one measured
    second may find the machine busier), as given in the last."""
    return trees if (rounds - 1 - round_) % 2 == 0 else trees[::-1]


def cpu_seconds(pid: int) -> float:
    """User + system time of ``pid`` so far (the machine is shared: wall time alone misleads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_gateway(args: argparse.Namespace, tmp: Path) -> None:
    port, echo, args.admin = free_port(), free_port(), free_port()
    folder = tmp / "config"
    write_config(folder, args.routes, port, echo)
    kind = {"delegation": "RouteTables", "gateway-api": "HTTPRoutes",
            "gateway-api-sections": "HTTPRoutes (sectionName)",
            "ingress": "Ingresses"}.get(SHAPE, "Routes")
    print(f"{args.routes} {kind} x 4 rules, {args.workers} worker(s); {load_note()}", flush=True)
    trees = trees_in_rounds(args)
    checks: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in trees}
    references: list[float] = []
    for round_ in range(args.rounds):  # alternated: each tree in the same minutes
        references.append(reference_seconds())
        for name, tree in in_order(trees, round_, args.rounds):
            checks[name].append(measure_validate(folder, tree))
    for name, _ in trees:
        label = "validate" if name == "this" else "validate (against)"
        cpu = statistics.median(c for _, c in checks[name])
        print(spread(label, [t for t, _ in checks[name]], f"  (cpu {cpu:.2f} s)"), flush=True)
    started: list[subprocess.Popen[bytes]] = []
    try:
        started.append(subprocess.Popen(
            [sys.executable, "-m", "propylon.demo.echo_server", "--port", str(echo),
             "--name", "bench"], cwd=REPO, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
        starts: dict[str, list[float]] = {name: [] for name, _ in trees}
        for round_ in range(args.rounds):
            references.append(reference_seconds())
            for name, tree in in_order(trees, round_, args.rounds):
                gateway, logs, took, cpu_text = start_gateway(args, folder, port, tree)
                starts[name].append(took)
                if round_ < args.rounds - 1 or name != "this":
                    stop(gateway)
        started.append(gateway)
        for name, _ in trees:
            label = "start" if name == "this" else "start (against)"
            last = f" (cpu so far: supervisor, workers: {cpu_text} s)" if name == "this" else ""
            print(spread(label, starts[name], " to the first answer" + last), flush=True)
        print(spread("machine speed", references, " for the reference workload, one core, "
                     "taken before each round (smaller: faster)"), flush=True)
        wait_for(lambda: len(children(gateway.pid)) >= args.workers, 30, "workers")
        time.sleep(1.0)
        print(f"memory at start  {memory(gateway.pid)}", flush=True)
        measure_config_dump(args.admin)
        print(f"memory after /config  {memory(gateway.pid)}", flush=True)
        measure_changes(args, folder, port, logs, gateway.pid)
        if SHAPE != "ingress":
            measure_upstream_edits(args, folder, logs, gateway.pid)
            measure_settings_edits(args, folder, logs, gateway.pid)
        if SHAPE in ("routes", "delegation"):
            measure_policy_edits(args, folder, port, logs, gateway.pid)
            measure_gateway_policy_edits(args, folder, port, logs, gateway.pid)
        if SHAPE == "delegation":
            measure_table_edits(args, folder, port, logs, gateway.pid)
        if SHAPE in ("routes", "delegation"):  # last: every rule wants an API key after it
            measure_consumer_edits(args, folder, port, logs, gateway.pid)
        print(f"memory after {args.changes} changes  {memory(gateway.pid)}", flush=True)
        if args.reloads:
            measure_reloads(args, folder, logs, gateway.pid)
    finally:
        for process in reversed(started):
            stop(process)


def start_gateway(
    args: argparse.Namespace, folder: Path, port: int, tree: Path
) -> tuple[subprocess.Popen[bytes], LogWatch, float, str]:
    """``propylon run`` of ``folder`` with the package of ``tree``, once it has answered its
    first request: the process, its log, the time that took and the cpu time so far."""
    begin = time.perf_counter()
    gateway = subprocess.Popen(
        [sys.executable, "-m", "propylon", "run", str(folder), "--workers",
         str(args.workers), "--admin", f"127.0.0.1:{args.admin}", "--access-log", "off"],
        cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    logs = LogWatch(gateway.stderr)
    probe = "/g0/t0/ping" if SHAPE == "delegation" else "/r0/ping"
    try:
        wait_for(lambda: answers(port, probe), 600, "first answer")
    except BaseException:
        stop(gateway)
        raise
    took = time.perf_counter() - begin
    cpu = ", ".join(f"{cpu_seconds(p):.2f}" for p in (gateway.pid, *children(gateway.pid)))
    return gateway, logs, took, cpu


def measure_config_dump(admin: int) -> None:
    """The admin listener's ``/config`` (the IR served, secrets redacted): its time and size."""
    begin = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", admin, timeout=120)
    try:
        connection.request("GET", "/config")
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    print(f"admin /config   {time.perf_counter() - begin:6.2f} s  {len(body) / 2**20:.1f} MiB "
          f"(status {response.status})", flush=True)


def measure_changes(
    args: argparse.Namespace, folder: Path, port: int, logs: LogWatch, pid: int
) -> None:
    installed: list[float] = []
    served: list[float] = []
    processes = (pid, *children(pid))
    cpu = [cpu_seconds(p) for p in processes]
    for n in range(args.changes):
        seen = len(logs.installed)
        begin = time.perf_counter()
        path = write_change(folder, n)
        _, at = logs.wait_new(seen, 600)
        installed.append(at - begin)
        wait_for(lambda: answers(port, path), 60, "the changed route")  # noqa: B023
        served.append(time.perf_counter() - begin)
    per_change = ", ".join(f"{(cpu_seconds(p) - c) / args.changes:.2f}"
                           for p, c in zip(processes, cpu, strict=True))
    print(f"change          median {statistics.median(installed):6.2f} s  max "
          f"{max(installed):6.2f} s  installed on every worker "
          f"(served: median {statistics.median(served):.2f} s; cpu per change: supervisor, "
          f"workers: {per_change} s)", flush=True)


def measure_edits(args: argparse.Namespace, path: Path, edit: Callable[[str, int], str],
                  logs: LogWatch, pid: int, label: str, what: str,
                  served: Callable[[int], bool] | None = None) -> None:
    """``path`` rewritten ``args.changes`` times as ``edit`` gives it (the original text and
    the edit's number), each until the supervisor logs the version installed on every
    worker (and ``served`` holds, when given); one line: ``label``, the times, ``what``."""
    original = path.read_text()
    processes = (pid, *children(pid))
    cpu = [cpu_seconds(p) for p in processes]
    installed: list[float] = []
    for n in range(args.changes):
        seen = len(logs.installed)
        begin = time.perf_counter()
        tmp = path.parent.parent / ".edit.tmp"
        tmp.write_text(edit(original, n))
        os.replace(tmp, path)
        _, at = logs.wait_new(seen, 600)
        installed.append(at - begin)
        if served is not None:
            wait_for(lambda n=n: served(n), 60, f"{label} {n} served")
    per_change = ", ".join(f"{(cpu_seconds(p) - c) / args.changes:.2f}"
                           for p, c in zip(processes, cpu, strict=True))
    print(f"{label:<15} median {statistics.median(installed):6.2f} s  max "
          f"{max(installed):6.2f} s  installed on every worker ({what}; cpu per change: "
          f"supervisor, workers: {per_change} s)", flush=True)


def measure_upstream_edits(args: argparse.Namespace, folder: Path, logs: LogWatch,
                           pid: int) -> None:
    """The Upstream's connect timeout changed in ``gateway.yaml``, the file of the Gateway
    (an Upstream's settings or endpoints, the most frequent change of a running
    configuration)."""
    measure_edits(args, folder / "gateway.yaml", lambda text, n: text.replace(
        "  endpoints: [", f"  connectTimeout: {2 + n}s\n  endpoints: [", 1),
        logs, pid, "upstream edit", "in the Gateway's file")


def measure_settings_edits(args: argparse.Namespace, folder: Path, logs: LogWatch,
                           pid: int) -> None:
    """The Upstream's balancing (its panic threshold), then the Gateway's listener (its
    header count limit) changed in ``gateway.yaml``: neither changes what a rule is."""
    measure_edits(args, folder / "gateway.yaml", lambda text, n: text.replace(
        "  endpoints: [", f"  loadBalancer: {{panicThreshold: {40 + n}}}\n  endpoints: [", 1),
        logs, pid, "balancing edit", "the Upstream's panic threshold")
    if SHAPE in ("routes", "delegation"):
        measure_edits(args, folder / "gateway.yaml", lambda text, n: text.replace(
            "protocol: HTTP}]", f"protocol: HTTP, limits: {{maxHeaderCount: {90 + n}}}}}]", 1),
            logs, pid, "listener edit", "the Gateway's header count limit")
    elif SHAPE.startswith("gateway-api"):
        ports = [free_port() for _ in range(args.changes)]
        measure_edits(args, folder / "gateway.yaml", lambda text, n: text.replace(
            "  listeners:\n", f"  listeners:\n    - {{name: extra, port: {ports[n]}, "
            "protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}}\n", 1),
            logs, pid, "listener edit", "a listener added to the Gateway, on another port")


def measure_policy_edits(args: argparse.Namespace, folder: Path, port: int, logs: LogWatch,
                         pid: int) -> None:
    """A Policy targeting one Route (one in the middle: its response header) written in a
    file of its own, then edited, until the new value is served."""
    middle = args.routes // 2 if SHAPE == "routes" else (args.routes + 9) // 20
    name, probe = (f"r{middle}", f"/r{middle}/api/x") if SHAPE == "routes" else (
        f"d{middle}", f"/g{middle}/t{middle * 10}/api/x")
    path = folder / "policy.yaml"

    def policy(value: int) -> str:
        return f"""apiVersion: propylon.dev/v1
kind: Policy
metadata: {{name: tagged, namespace: {NAMESPACE}}}
spec:
  targetRefs: [{{kind: Route, name: {name}}}]
  headers: {{response: {{set: {{x-tag: "v{value}"}}}}}}
"""

    def tagged(value: int) -> bool:
        return response_header(port, probe, "x-tag") == f"v{value}"

    seen = len(logs.installed)
    path.write_text(policy(0))
    logs.wait_new(seen, 600)
    wait_for(lambda: tagged(0), 60, "the Policy served")
    measure_edits(args, path, lambda text, n: text.replace('"v0"', f'"v{n + 1}"'), logs, pid,
                  "policy edit", "a Policy targeting one Route",
                  served=lambda n: tagged(n + 1))


def measure_gateway_policy_edits(args: argparse.Namespace, folder: Path, port: int,
                                 logs: LogWatch, pid: int) -> None:
    """The Gateway's own policies edited in its file (a header set on every response), until
    the new value is served on a Route in the middle (not the one ``policy edit`` tags:
    its Policy's headers would win over the Gateway's)."""
    group = (args.routes + 9) // 20 + 1
    probe = f"/r{args.routes // 2 + 1}/api/x" if SHAPE == "routes" else (
        f"/g{group}/t{group * 10}/api/x")

    def tagged(value: int) -> bool:
        return response_header(port, probe, "x-gateway") == f"v{value}"

    measure_edits(args, folder / "gateway.yaml", lambda text, n: text.replace(
        "  routeSelector:", "  policies: [{headers: {response: {set: {x-gateway: "
        f'"v{n}"}}}}}}}}]\n  routeSelector:', 1),
        logs, pid, "gateway policy edit", "the Gateway's own policies, until served",
        served=tagged)


def measure_consumer_edits(args: argparse.Namespace, folder: Path, port: int,
                           logs: LogWatch, pid: int) -> None:
    """An apiKey policy added to the Gateway's (every rule then has the filter) and a
    Consumer, then the Consumer's key changed (its ``secretRef`` names another file), each
    until the new key is admitted on a Route in the middle and the old one refused."""
    keys = folder.parent / "keys"
    keys.mkdir(exist_ok=True)
    for n in range(args.changes + 1):
        (keys / f"key-{n}.txt").write_text(f"bench-key-{n}\n")
    probe = f"/r{args.routes // 2 + 1}/api/x" if SHAPE == "routes" else (
        f"/g{(args.routes + 9) // 20 + 1}/t{((args.routes + 9) // 20 + 1) * 10}/api/x")

    def status_with(key: str) -> int:
        with contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=2)) as c:
            c.request("GET", probe, headers={"x-api-key": key})
            response = c.getresponse()
            response.read()
            return response.status

    def admitted(n: int) -> bool:
        return status_with(f"bench-key-{n}") == 200 and (
            n == 0 or status_with(f"bench-key-{n - 1}") == 401)

    gateway = folder / "gateway.yaml"
    text = gateway.read_text()
    seen = len(logs.installed)
    gateway.write_text(text.replace("  policies: [", "  policies: [{apiKey: {}}, ", 1)
                       if "  policies: [" in text else text.replace(
                           "  routeSelector:", "  policies: [{apiKey: {}}]\n  routeSelector:"))
    consumer = folder / "consumer.yaml"
    consumer.write_text(f"""apiVersion: propylon.dev/v1
kind: Consumer
metadata: {{name: bench-client, namespace: {NAMESPACE}}}
spec:
  credentials: {{apiKeys: [{{secretRef: {{file: ../keys/key-0.txt}}}}]}}
""")
    logs.wait_new(seen, 600)
    wait_for(lambda: admitted(0), 60, "the Consumer's first key admitted")
    measure_edits(args, consumer, lambda text, n: text.replace("key-0.txt", f"key-{n + 1}.txt"),
                  logs, pid, "consumer edit", "a Consumer's key, every rule behind a "
                  "Gateway-level apiKey, until admitted", served=lambda n: admitted(n + 1))


def measure_table_edits(args: argparse.Namespace, folder: Path, port: int, logs: LogWatch,
                        pid: int) -> None:
    """A RouteTable edited in its file of 100 (its first rule's prefix; a file in the
    middle), until the edited path answers."""
    files = sorted(folder.glob("routes-*.yaml"))
    path = files[len(files) // 2]
    text = path.read_text()
    prefix = text[text.index("prefix: ") + 8:text.index("/api}")]
    measure_edits(args, path, lambda text, n: text.replace("/api}", f"/ap{n}}}", 1),
                  logs, pid, "table edit", "a RouteTable in a file of 100",
                  served=lambda n: answers(port, f"{prefix}/ap{n}/x"))


def measure_reloads(args: argparse.Namespace, folder: Path, logs: LogWatch, pid: int) -> None:
    samples: list[tuple[int, list[int]]] = []
    for n in range(args.reloads):
        seen = len(logs.installed)
        write_change(folder, n % 2)
        logs.wait_new(seen, 600)
        if n % 10 == 9:
            samples.append((rss_kib(pid), [rss_kib(w) for w in children(pid)]))
    for index, (sup, workers) in enumerate(samples):
        print(f"  after {(index + 1) * 10:3d} reloads: supervisor {sup / 1024:.0f} MiB, workers "
              f"[{', '.join(f'{w / 1024:.0f}' for w in workers)}] MiB", flush=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# -- in-process stages ---------------------------------------------------------------------
def run_phases(args: argparse.Namespace, tmp: Path) -> None:
    import asyncio
    import dataclasses

    from propylon import ir
    from propylon.config import load_paths
    from propylon.ir import codec
    from propylon.ir.delta import dumps_delta, loads_delta, reuse_unchanged
    from propylon.runtime.compile import Services, compile_snapshot
    from propylon.runtime.gc_pause import gc_paused
    from propylon.standalone import build_from_resources

    folder = tmp / "config"
    write_config(folder, args.routes, 8080, 9000)
    print(f"{args.routes} x 4 rules ({SHAPE}); "
          f"{load_note()}")
    clock, cpu = time.perf_counter(), time.process_time()

    def lap(name: str) -> None:  # CPU time too: the machine is shared
        nonlocal clock, cpu
        now, now_cpu = time.perf_counter(), time.process_time()
        print(f"  {name:28} {now - clock:7.3f} s  (cpu {now_cpu - cpu:6.3f} s)", flush=True)
        clock, cpu = now, now_cpu

    loaded = load_paths([folder])
    lap("load (parse + validate)")
    again = load_paths([folder])
    lap("load again (unchanged files)")
    result = build_from_resources(again.resources, again.rejected)
    lap("translate + policy check")
    assert result.snapshot is not None
    with gc_paused():  # as the supervisor and the workers do
        text = ir.dumps(result.snapshot)
        lap(f"IR encode ({len(text) / 1e6:.1f} MB, after seal)")
        text = ir.dumps(result.snapshot)
        lap("IR encode again")
        snapshot = ir.loads(text)
        lap("IR decode")
        proxy_texts = codec.PartTexts()  # a connected proxy's encoding memo
        with codec.part_texts(proxy_texts):
            ir.content_hash(snapshot)
        lap("hash (a proxy, once per full IR)")
    loop = asyncio.new_event_loop()
    services = Services.scratch(loop)
    compile_snapshot(snapshot, services)
    lap("compile")
    print("  one Route added:")
    write_change(folder, 0)
    changed = load_paths([folder])
    lap("load")
    rebuilt = build_from_resources(changed.resources, changed.rejected).snapshot
    lap("translate + policy check")
    assert rebuilt is not None
    with gc_paused():
        reused = reuse_unchanged(rebuilt, result.snapshot)
        lap("reuse unchanged rules")
        delta = dumps_delta(reused, result.snapshot, runs=True)  # as proxies ask
        lap(f"delta encode ({len(delta) / 1e3:.0f} kB)")
        decoded = loads_delta(delta, snapshot)
        lap("delta decode")
        with codec.part_texts(proxy_texts):
            sealed = ir.seal(dataclasses.replace(decoded, version=""))
        lap("seal what it rebuilt (a proxy)")
        assert sealed.version == reused.version
    compile_snapshot(decoded, services)
    lap("compile, unchanged chains kept")
    loop.close()
    del loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--delegation", action="store_true")
    parser.add_argument("--gateway-api", action="store_true",
                        help="Kubernetes Gateway API objects instead of propylon.dev/v1 ones")
    parser.add_argument("--sections", action="store_true",
                        help="with --gateway-api: each route on one of two listeners")
    parser.add_argument("--ingress", action="store_true",
                        help="Kubernetes Ingresses (4 paths each) served by a native Gateway")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--reloads", type=int, default=0)
    parser.add_argument("--phases", action="store_true")
    parser.add_argument("--rounds", type=int, default=1,
                        help="validate and start this many times each (median and range)")
    parser.add_argument("--against", metavar="TREE",
                        help="another checkout (built as it runs): its validate and start "
                             "are measured too, alternated with this tree's in each round")
    args = parser.parse_args()
    global SHAPE
    SHAPE = ("delegation" if args.delegation else "gateway-api-sections" if args.sections
             else "gateway-api" if args.gateway_api else "ingress" if args.ingress
             else "routes")
    tmp = Path(tempfile.mkdtemp(prefix="propylon-scale-"))
    try:
        (run_phases if args.phases else run_gateway)(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
