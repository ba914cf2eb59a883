"""End-to-end helpers: processes (optionally in a network namespace, optionally pinned to CPUs)
stopped by PID, example configs loaded and re-addressed, and a curl-based HTTP client that can
run inside a namespace.

Every wait is bounded (``poll_until``); every process started here is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.net import poll_until

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
Doc = dict[str, Any]


# -- processes ------------------------------------------------------------------------------
def wrap(argv: list[str], ns: str | None = None, cpus: str | None = None) -> list[str]:
    """``argv`` run in network namespace ``ns`` and pinned to ``cpus`` (both exec, so the
    PID of the started process is the PID of ``argv[0]``)."""
    out = list(argv)
    if ns:
        out = ["ip", "netns", "exec", ns, *out]
    if cpus:
        out = ["taskset", "-c", cpus, *out]
    return out


@dataclass
class Procs:
    """Processes one test started; ``stop_all`` ends each by its PID (SIGTERM, then SIGKILL)."""

    logs: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], *, ns: str | None = None,
              cpus: str | None = None, env: dict[str, str] | None = None,
              cwd: Path = REPO) -> subprocess.Popen[bytes]:
        full_env = {**os.environ, **(env or {})}
        with open(self.log_path(name), "ab") as log:
            proc = subprocess.Popen(wrap(argv, ns, cpus), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=cwd, env=full_env)
        self.running[name] = proc
        return proc

    def pid(self, name: str) -> int:
        return self.running[name].pid

    def python(self, name: str, *args: str, **kw: Any) -> subprocess.Popen[bytes]:
        return self.start(name, [sys.executable, "-m", *args], **kw)

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def log(self, name: str) -> str:
        try:
            return self.log_path(name).read_text(errors="replace")
        except OSError:
            return ""

    def alive(self, name: str) -> bool:
        proc = self.running[name]
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)[-3000:]}")
        return True

    def stop(self, name: str) -> None:
        proc = self.running.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def stop_all(self) -> None:
        for name in reversed(list(self.running)):  # newest first: proxies before planes
            with contextlib.suppress(Exception):
                self.stop(name)


# -- where processes run ----------------------------------------------------------------------
def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (children, grandchildren ...), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name field may hold spaces
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def thread_cpus(pid: int) -> dict[int, set[int]]:
    """The CPUs each thread of process ``pid`` may run on (thread id -> CPU set)."""
    cpus: dict[int, set[int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            cpus[int(task.name)] = os.sched_getaffinity(int(task.name))
    return cpus


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


@dataclass(frozen=True)
class CpuTimes:
    """Clock ticks spent by one CPU (from /proc/stat): running tasks (user, nice, system),
    busy (tasks plus interrupts), stolen (the hypervisor ran something else on it) and in
    total (busy plus idle, iowait and steal)."""

    tasks: int
    busy: int
    total: int
    steal: int = 0


def cpu_times() -> dict[int, CpuTimes]:
    """Per CPU ticks so far; two readings give what each CPU did in between."""
    out: dict[int, CpuTimes] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
            tasks = user + nice + system
            out[int(name[3:])] = CpuTimes(tasks, tasks + irq + softirq,
                                          tasks + irq + softirq + idle + iowait + steal, steal)
    return out


def process_ticks() -> dict[int, int]:
    """Clock ticks each process on the machine ran so far (all its threads, user + system)."""
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            ticks[int(entry.name)] = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks


# -- HTTP through curl (works inside a namespace) ----------------------------------------------
@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name.lower():
                return v
        return None

    def json(self) -> Any:
        return json.loads(self.body)

    def echoed(self, name: str) -> list[str]:
        """Values of header ``name`` as the echo service received them, in order."""
        return [v for k, v in self.json()["headers"] if k.lower() == name.lower()]


def curl(url: str, *, ns: str | None = None, headers: Iterable[tuple[str, str]] = (),
         method: str = "GET", proxy: str | None = None, cacert: Path | None = None,
         resolve: str | None = None, interface: str | None = None,
         timeout: float = 5.0) -> Reply:
    """One request with curl (run in ``ns`` when given). Status 0 means no answer."""
    with tempfile.TemporaryDirectory() as tmp:
        head, body = Path(tmp) / "head", Path(tmp) / "body"
        argv = ["curl", "-sS", "--max-time", str(timeout), "-X", method, "-D", str(head),
                "-o", str(body), "-w", "%{http_code}", "--noproxy", "" if proxy else "*"]
        for name, value in headers:
            argv += ["-H", f"{name}: {value}"]
        if proxy:
            argv += ["--proxy", proxy]
        if cacert:
            argv += ["--cacert", str(cacert)]
        if resolve:
            argv += ["--resolve", resolve]
        if interface:
            argv += ["--interface", interface]
        argv.append(url)
        done = subprocess.run(wrap(argv, ns), capture_output=True, timeout=timeout + 5)
        status = int(done.stdout.decode().strip() or 0)
        raw = head.read_bytes().decode("latin-1") if head.exists() else ""
        parsed: list[tuple[str, str]] = []
        for line in raw.split("\r\n")[1:]:
            if ":" in line:
                k, _, v = line.partition(":")
                parsed.append((k.strip().lower(), v.strip()))
        return Reply(status, parsed, body.read_bytes() if body.exists() else b"")


def tcp_connect_fails(host: str, port: int, ns: str | None = None) -> bool:
    """True when a TCP connect from ``ns`` to host:port fails within 2 s."""
    code = ("import socket,sys\n"
            "try:\n"
            f"    socket.create_connection(({host!r}, {port}), timeout=2).close()\n"
            "except OSError as e:\n"
            "    print(type(e).__name__, e); sys.exit(0)\n"
            "sys.exit(1)\n")
    done = subprocess.run(wrap([sys.executable, "-c", code], ns), capture_output=True,
                          timeout=10)
    return done.returncode == 0


def wait_http(url: str, *, ns: str | None = None, alive: Callable[[], bool] | None = None,
              status: int = 200, timeout: float = 30.0, **kw: Any) -> Reply:
    def check() -> Reply | None:
        if alive is not None:
            alive()
        reply = curl(url, ns=ns, timeout=2.0, **kw)
        return reply if reply.status == status else None
    return poll_until(check, timeout, interval=0.1, message=f"{url} answering {status}")


def wait_port(host: str, port: int, ns: str | None = None, timeout: float = 15.0) -> None:
    code = f"import socket; socket.create_connection(({host!r}, {port}), timeout=1).close()"
    poll_until(lambda: subprocess.run(wrap([sys.executable, "-c", code], ns),
                                      capture_output=True, timeout=10).returncode == 0,
               timeout, interval=0.1, message=f"{host}:{port} listening")


# -- example configurations -------------------------------------------------------------------
def load_example(pattern: str, name: str = "gateway.yaml") -> list[Doc]:
    with open(EXAMPLES / pattern / name) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def load_example_dir(pattern: str) -> list[Doc]:
    """Every document of every ``*.yaml`` file of ``examples/<pattern>/``, file by file."""
    docs: list[Doc] = []
    for path in sorted((EXAMPLES / pattern).glob("*.yaml")):
        docs += load_example(pattern, path.name)
    return docs


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise KeyError(f"{kind} {name} not in the example")


def readdress(docs: list[Doc], listeners: dict[str, tuple[str, int]] | None = None,
              endpoints: dict[str, tuple[str, int]] | None = None) -> list[Doc]:
    """A copy of ``docs`` with Gateway listener ``name`` -> (address, port) and Upstream
    ``name`` -> one endpoint (address, port)."""
    out = copy.deepcopy(docs)
    for doc in out:
        name = doc["metadata"]["name"]
        if doc["kind"] == "Gateway":
            for listener in doc["spec"]["listeners"]:
                key = f"{name}/{listener['name']}"
                if listeners and key in listeners:
                    listener["address"], listener["port"] = listeners[key]
        if doc["kind"] == "Upstream" and endpoints and name in endpoints:
            address, port = endpoints[name]
            doc["spec"]["endpoints"] = [{"address": address, "port": port}]
    return out


def write_docs(path: Path, docs: list[Doc]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def run_gateway(procs: Procs, name: str, config: Path, admin_port: int, *,
                ns: str | None = None, cpus: str | None = None,
                env: dict[str, str] | None = None, access_log: Path | None = None,
                extra: Iterable[str] = (), wait: bool = True) -> None:
    """``propylon run CONFIG`` and wait until its admin ``/ready`` answers 200 (with
    ``wait=False``, call ``wait_ready`` later: gateways started together start faster)."""
    procs.python(name, "propylon", "run", str(config), "--no-watch",
                 "--admin", f"127.0.0.1:{admin_port}",
                 "--access-log", str(access_log) if access_log else "off", *extra,
                 ns=ns, cpus=cpus, env=env)
    if wait:
        wait_ready(procs, name, admin_port, ns=ns)


def wait_ready(procs: Procs, name: str, admin_port: int, ns: str | None = None) -> None:
    wait_http(f"http://127.0.0.1:{admin_port}/ready", ns=ns, alive=lambda: procs.alive(name))


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- connected mode ---------------------------------------------------------------------------
@dataclass
class Control:
    url: str
    token_file: Path

    def apply(self, path: Path) -> str:
        done = subprocess.run([sys.executable, "-m", "propylon", "apply", "-f", str(path),
                               "--control", self.url, "--token-file", str(self.token_file)],
                              capture_output=True, text=True, timeout=60, cwd=REPO)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


def start_control(procs: Procs, root: Path, port: int, name: str = "control",
                  cpus: str | None = None) -> Control:
    token_file = root / "control-token"
    procs.python(name, "propylon", "control", "--listen", f"127.0.0.1:{port}",
                 "--store", f"sqlite:///{root / 'control.db'}", "--token-file",
                 str(token_file), "--log-level", "warning", cpus=cpus)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/v1/status", status=401, alive=lambda: procs.alive(name))
    return Control(url, token_file)


def start_proxy(procs: Procs, control: Control, gateway: str, name: str, root: Path,
                admin_port: int, cpus: str | None = None, workers: int = 1,
                wait: bool = True) -> None:
    """``propylon proxy`` for ``gateway`` (NS/NAME); waits until it holds a configuration
    (with ``wait=False``, call ``wait_ready`` later)."""
    procs.python(name, "propylon", "proxy", "--control", control.url, "--gateway", gateway,
                 "--token-file", str(control.token_file), "--cache-dir",
                 str(root / f"cache-{name}"), "--admin", f"127.0.0.1:{admin_port}",
                 "--access-log", "off", "--log-level", "warning", "--workers", str(workers),
                 cpus=cpus)
    if wait:
        wait_ready(procs, name, admin_port)
