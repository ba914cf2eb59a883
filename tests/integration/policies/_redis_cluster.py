"""A real Redis Cluster on 127.0.0.1 from the Debian packages (redis-server, redis-cli).

Every node is a ``redis-server --cluster-enabled yes`` on a free port with its cluster bus on
another free port (``--cluster-port``, so the bus is not ``port + 10000``, which may be taken
or beyond 65535), in its own directory under one temporary root. The cluster is created with
``redis-cli --cluster create ... --cluster-yes`` and is ready when every node says
``cluster_state:ok``. Nodes are stopped through their own PIDs (``_helpers.stop``); a stopped
cluster can be started again on the same ports and reforms from its ``nodes.conf`` files
(same node ids and slots, data gone: ``--save ''``, no AOF).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.integration.policies._helpers import free_port, poll_until, port_open, stop


def redis_cli(*args: str, timeout: float = 10.0) -> str:
    cli = shutil.which("redis-cli")
    assert cli is not None, "redis-cli is missing (Debian package redis-tools)"
    done = subprocess.run([cli, "-h", "127.0.0.1", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    return done.stdout + done.stderr


class RedisCluster:
    """``masters`` primaries (and ``replicas`` per primary) on free loopback ports."""

    def __init__(self, root: Path, masters: int = 3, replicas: int = 0) -> None:
        self.server = shutil.which("redis-server")
        assert self.server is not None, "redis-server is missing (Debian package redis-server)"
        self.root = root
        self.replicas = replicas
        count = masters * (1 + replicas)
        self.ports = [free_port() for _ in range(count)]
        self.bus_ports = [free_port() for _ in range(count)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        try:
            self.start()
            out = redis_cli("--cluster", "create",
                            *(f"127.0.0.1:{p}" for p in self.ports),
                            "--cluster-replicas", str(replicas), "--cluster-yes", timeout=30)
            assert "[OK] All 16384 slots covered" in out, out
            self.wait_ok()
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        """Start every node that is not running (first start, or after ``stop_all``)."""
        assert self.server is not None
        for i, (port, bus) in enumerate(zip(self.ports, self.bus_ports, strict=True)):
            proc = self.procs[i]
            if proc is not None and proc.poll() is None:
                continue
            workdir = self.root / f"node-{port}"
            workdir.mkdir(parents=True, exist_ok=True)
            self.procs[i] = subprocess.Popen(
                [self.server, "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-port", str(bus),
                 "--cluster-config-file", str(workdir / "nodes.conf"),
                 "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
                 "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        for port in self.ports:
            poll_until(lambda port=port: port_open(port), timeout=10)  # type: ignore[misc]

    def state(self, port: int) -> str:
        for line in redis_cli("-p", str(port), "cluster", "info", timeout=2).splitlines():
            if line.startswith("cluster_state:"):
                return line.split(":", 1)[1].strip()
        return ""

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node reports ``cluster_state:ok`` (bounded)."""
        poll_until(lambda: all(self.state(p) == "ok" for p in self.ports),
                   timeout=timeout, interval=0.2)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc is not None:
                stop(proc)

    def close(self) -> None:
        self.stop_all()
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def masters(self) -> list[int]:
        """Ports of the nodes that are primaries now."""
        out = redis_cli("-p", str(self.ports[0]), "cluster", "nodes", timeout=2)
        return sorted(int(line.split()[1].split(":")[1].split("@")[0])
                      for line in out.splitlines() if "master" in line.split()[2])

    def keyslot(self, key: str) -> int:
        return int(redis_cli("-p", str(self.ports[0]), "cluster", "keyslot", key).strip())

    def keys(self, port: int, pattern: str = "*") -> list[str]:
        """The keys one node holds (``--scan`` on that node only)."""
        out = redis_cli("-p", str(port), "--scan", "--pattern", pattern)
        return [line for line in out.splitlines() if line]
