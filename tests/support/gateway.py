"""A real ``propylon run`` process on loopback ports, for the integration tests.

The config is YAML text (or a builder called with the listener port). Start waits until
``GET /ready`` on the admin port answers 200 and fails with the process's stderr if it exits
first. Stop sends SIGTERM, then SIGKILL, to the processes this helper started, by PID.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.net import StopPolling, free_port, poll_until

Config = str | Callable[[int], str]
REPO = Path(__file__).resolve().parents[2]


class GatewayExited(StopPolling):
    pass


class Gateway:
    def __init__(
        self,
        root: Path,
        config: Config,
        *,
        workers: int = 1,
        watch: bool = False,
        access_log: bool = True,
        drain_timeout: float = 5.0,
        log_level: str = "info",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.root = root
        self.config_dir = root / "config"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.config_file = self.config_dir / "gateway.yaml"
        self.port = free_port()
        self.admin_port = free_port()
        self.workers = workers
        self.watch = watch
        self.drain_timeout = drain_timeout
        self.log_level = log_level
        self.extra_args = extra_args  # further flags of `propylon run`
        self.access_log_path: Path | None = root / "access.log" if access_log else None
        self.stderr_path = root / "gateway.stderr"
        self.process: subprocess.Popen[bytes] | None = None
        self.worker_pids: list[int] = []
        self.write_config(config)

    # -- configuration -------------------------------------------------------------------
    def render(self, config: Config) -> str:
        return config(self.port) if callable(config) else config

    def write_config(self, config: Config, name: str = "gateway.yaml") -> None:
        """Replace a config file atomically (a watcher never sees half a file)."""
        target = self.config_dir / name
        tmp = self.root / f".{name}.tmp"
        tmp.write_text(self.render(config))
        os.replace(tmp, target)

    # -- process -------------------------------------------------------------------------
    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "propylon", "run", str(self.config_dir),
            "--admin", f"127.0.0.1:{self.admin_port}",
            "--access-log", str(self.access_log_path) if self.access_log_path else "off",
            "--watch" if self.watch else "--no-watch",
            "--workers", str(self.workers),
            "--drain-timeout", str(self.drain_timeout),
            "--log-level", self.log_level,
            *self.extra_args,
        ]

    def start(self, timeout: float = 30.0) -> Gateway:
        return self.launch().wait_ready(timeout)

    def launch(self) -> Gateway:
        """The process, without waiting for it (``wait_ready``): gateways launched together
        start faster."""
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                self.command(), cwd=REPO, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=stderr,
            )
        return self

    def wait_ready(self, timeout: float = 30.0) -> Gateway:
        # a refused connect or one GET /ready per try: polled often, start-up ends sooner
        poll_until(self._ready, timeout, interval=0.01, message="gateway /ready")
        self.worker_pids = [w["pid"] for w in self.stats()["workers"]]
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise GatewayExited(
                f"gateway exited with {self.process.returncode}:\n{self.stderr_text()}"
            )
        try:
            return self.admin_get("/ready")[0] == 200
        except OSError:
            return False

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, signum: int) -> None:
        assert self.process is not None and self.process.poll() is None
        os.kill(self.process.pid, signum)

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, wait, then SIGKILL; workers still alive after that are killed by PID."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout if timeout is not None else self.drain_timeout + 10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        for pid in self.worker_pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if _is_zombie_or_gone(pid):
                    continue
                os.kill(pid, signal.SIGKILL)
        return process.returncode

    # -- admin ---------------------------------------------------------------------------
    def admin_get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def stats(self) -> dict[str, Any]:
        status, body = self.admin_get("/stats")
        assert status == 200, body
        return json.loads(body)

    def version(self) -> str:
        return str(self.stats()["version"])

    def metrics(self) -> str:
        status, body = self.admin_get("/metrics")
        assert status == 200, body
        return body.decode()

    def reloads(self) -> tuple[int, int]:
        """(succeeded, failed) reloads so far."""
        reloads = self.stats()["reloads"]
        return reloads["succeeded"], reloads["failed"]

    def statuses(self) -> dict[str, dict[str, Any]]:
        """``Kind namespace/name`` -> status, from the admin ``/config``."""
        status, body = self.admin_get("/config")
        assert status == 200, body
        return {f"{s['kind']} {s['key']}": s for s in json.loads(body)["statuses"]}

    # -- access log ----------------------------------------------------------------------
    def access_log(self) -> list[dict[str, Any]]:
        """Every complete JSON line written so far."""
        assert self.access_log_path is not None, "started with --access-log off"
        try:
            text = self.access_log_path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def wait_access_log(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        return poll_until(
            lambda: (lines := self.access_log()) and len(lines) >= count and lines,
            timeout, message=f"{count} access log line(s)",
        )


def _is_zombie_or_gone(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] in ("Z", "X")


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


def propylon(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m propylon ARGS`` from the repository, its output captured (60 s at most)."""
    return subprocess.run([sys.executable, "-m", "propylon", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=60, check=False)
