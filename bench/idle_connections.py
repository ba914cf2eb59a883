"""What an idle keep-alive client connection costs a worker: RSS growth over N connections.

Usage: ``python bench/idle_connections.py [--connections 10000] [--peers]``. Starts the
peers' nginx upstream (bench/policies.py) and one gateway (one worker, access log off), opens
N client connections, sends one request on each and reads its answer (so each connection has
served a request and waits, idle, for the next), then reads the worker's RSS
(``/proc/PID/status`` VmRSS) and prints the growth per connection. The same is done against
an nginx proxy with one worker (``--peers``) as the reference. Connections are opened 32
at a time with their requests in flight together, so the run takes seconds.
Needs ``ulimit -n`` above N + 100 (raised to the hard limit here).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

from policies import nginx_upstream  # noqa: E402

from tests.integration.policies._helpers import (  # noqa: E402
    GatewayProc,
    free_port,
    poll_until,
    port_open,
    stop,
)

IN_FLIGHT = 32
NGINX_PROXY = """worker_processes 1;
daemon off;
pid {run}/proxy.pid;
error_log {run}/proxy-error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 65536; }}
http {{
    access_log off;
    client_body_temp_path {run}/p_body;
    proxy_temp_path {run}/p_proxy;
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    upstream origin {{ server 127.0.0.1:{upstream}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ proxy_pass http://origin; proxy_http_version 1.1;
                     proxy_set_header Connection ""; }}
    }}
}}
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def children(pid: int) -> list[int]:
    """Child processes serving connections (not multiprocessing's resource tracker)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()
            if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]


def open_idle(port: int, count: int) -> list[socket.socket]:
    """``count`` connections, each having served one request, left open and idle. At most
    ``IN_FLIGHT`` requests are in flight at once (as wrk's 64 connections), so the gateway's
    upstream pool stays as small as under a load test and what grows is the client side."""
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    kept: list[socket.socket] = []
    for start in range(0, count, IN_FLIGHT):
        batch = [socket.create_connection(("127.0.0.1", port))
                 for _ in range(min(IN_FLIGHT, count - start))]
        for sock in batch:
            sock.sendall(request)
        for sock in batch:
            sock.settimeout(10)
            got = b""
            while b"\r\n\r\n" not in got or not got.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("connection closed before the answer")
                got += chunk
            if not got.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(got[:200].decode(errors="replace"))
        kept += batch
    return kept


def measure(name: str, port: int, worker: int, count: int) -> float:
    open_idle(port, 200)  # warm up: pools, allocator arenas, lazily built state
    time.sleep(0.5)
    before = rss_kib(worker)
    kept = open_idle(port, count)
    time.sleep(2.5)  # idle: past the gateway's IDLE_RELEASE and its sweep
    after = rss_kib(worker)
    per = (after - before) * 1024 / count
    print(f"| {name} | {count:,} | {before / 1024:.1f} | {after / 1024:.1f} | "
          f"{(after - before) / 1024:.1f} | {per:,.0f} |")
    for sock in kept:
        sock.close()
    return per


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--peers", action="store_true", help="measure an nginx proxy too")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections + 200:  # each side (this client, the server) holds N
        raise SystemExit(f"ulimit -Hn is {hard}: too low for {args.connections} connections")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        upstream = nginx_upstream(root)
        if upstream is None:
            raise SystemExit("nginx is needed (the upstream)")
        config = (REPO / "bench" / "gateway.yaml").read_text()
        config = config.replace("port: 18090", "port: $PORT").replace(
            "port: 18080", f"port: {upstream[1]}")
        gw = GatewayProc(root / "gw", config)
        print("| server | connections | worker RSS before (MiB) | after (MiB) | growth (MiB) "
              "| bytes per idle connection |")
        print("|---|---:|---:|---:|---:|---:|")
        nginx = None
        try:
            (worker,) = children(gw.proc.pid)
            measure("propylon (1 worker)", gw.port, worker, args.connections)
            binary = shutil.which("nginx") or "/usr/sbin/nginx"
            if args.peers:
                port = free_port()
                conf = root / "proxy-nginx.conf"
                conf.write_text(NGINX_PROXY.format(run=root, port=port, upstream=upstream[1]))
                nginx = subprocess.Popen([binary, "-p", str(root), "-e",
                                          str(root / "proxy-error.log"), "-c", str(conf)])
                poll_until(lambda: port_open(port))
                (nginx_worker,) = children(nginx.pid)
                measure("nginx (1 worker)", port, nginx_worker, args.connections)
        finally:
            gw.stop()
            stop(upstream[0])
            if nginx is not None:
                stop(nginx)


if __name__ == "__main__":
    main()
