"""HTTP/2 and gRPC throughput, beside nginx, in one run (issue #13's performance section).

    python bench/http2_grpc.py [--seconds 10] [--rounds 3] [--smoke]

- h2load (Debian nghttp2-client) at ``-c 16 -m 10`` against nginx (``listen ... http2``,
  h2c with prior knowledge, ``proxy_pass`` to the upstream with a keep-alive pool) and against
  Propylon (an h2c listener forwarding over HTTP/1.1 to the same upstream), both pinned to CPU
  1, the load and the upstream (nginx ``return 200`` with a 100-byte body) on CPU 0; rounds
  alternate the order. Requests/s, and the ratio to nginx.
- gRPC unary calls/s: a grpcio client (16 threads sharing one channel, on CPU 0) calling a
  grpcio server directly, then through Propylon (Upstream protocol HTTP2).

Prints a Markdown table. Every process is started here and stopped by its PID.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOAD_CPU, PROXY_CPU = "0", "1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], cpu: str, **kwargs: object) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["taskset", "-c", cpu, *cmd], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


NGINX = """daemon off; worker_processes 1; pid {dir}/{name}.pid; error_log {dir}/{name}.err;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 10000000;
  upstream up {{ server 127.0.0.1:{up}; keepalive 128; }}
  server {{ listen 127.0.0.1:{port} {http2}; {body} }} }}
"""
UPSTREAM_BODY = 'location / { return 200 "' + "x" * 100 + '"; }'
PROXY_BODY = ("location / { proxy_pass http://up; proxy_http_version 1.1; "
              'proxy_set_header Connection ""; }')
GATEWAY = """apiVersion: propylon.dev/v1
kind: Gateway
metadata: {{name: bench}}
spec:
  listeners: [{{name: web, port: {port}, address: 127.0.0.1}}]
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: all}}
spec:
  rules:
    - matches: [{{grpc: {{service: propylon.test.Echo}}}}]
      forward: {{backends: [{{upstream: grpc}}], timeout: 0s}}
    - forward: {{backends: [{{upstream: up}}]}}
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {{name: up}}
spec:
  endpoints: [{{address: 127.0.0.1, port: {up}}}]
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {{name: grpc}}
spec:
  protocol: HTTP2
  endpoints: [{{address: 127.0.0.1, port: {grpc}}}]
"""


def nginx(procs: Procs, workdir: Path, name: str, port: int, up: int, proxy: bool,
          cpu: str) -> None:
    conf = workdir / f"{name}.conf"
    conf.write_text(NGINX.format(dir=workdir, name=name, port=port, up=up,
                                 http2="http2" if proxy else "",
                                 body=PROXY_BODY if proxy else UPSTREAM_BODY))
    procs.start([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-p",
                 str(workdir)], cpu)
    wait_port(port)


def h2load(port: int, seconds: float) -> float:
    run = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "h2load", "-c", "16", "-m", "10", "-D",
         str(max(1, int(seconds))), "--warm-up-time", "1", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=seconds + 60)
    out = run.stdout + run.stderr
    match = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    failed = re.search(r"(\d+) failed", out)
    if match is None or failed is None:
        raise RuntimeError(f"h2load output not understood:\n{out}")
    if int(failed.group(1)):
        print(f"  (port {port}: {failed.group(1)} failed requests)", file=sys.stderr)
    return float(match.group(1))


def grpc_rate(target: str, seconds: float, stub_dir: Path) -> float:
    """Unary calls per second from 16 threads over one channel."""
    sys.path.insert(0, str(stub_dir))
    import echo_pb2
    import echo_pb2_grpc
    import grpc

    os.sched_setaffinity(0, {int(LOAD_CPU)})
    calls = [0] * 16
    stop = time.monotonic() + seconds
    with grpc.insecure_channel(target) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        stub.Unary(echo_pb2.Note(text="warm"))

        def worker(index: int) -> None:
            note = echo_pb2.Note(text="bench", count=1)
            while time.monotonic() < stop:
                stub.Unary(note)
                calls[index] += 1
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return sum(calls) / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="1 round of 2 s: does it run")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.rounds = 2.0, 1
    procs = Procs()
    workdir = Path(tempfile.mkdtemp(prefix="propylon-h2-bench-"))
    try:
        up, ngx, gw, grpc_port = free_port(), free_port(), free_port(), free_port()
        nginx(procs, workdir, "upstream", up, up, proxy=False, cpu=LOAD_CPU)
        nginx(procs, workdir, "nginx", ngx, up, proxy=True, cpu=PROXY_CPU)
        # the gRPC service of examples/grpc, its stubs generated into the work dir
        example = REPO / "examples" / "grpc"
        for name in ("echo_server.py", "echo.proto"):
            shutil.copy(example / name, workdir / name)
        procs.start([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(workdir)!r});"
                     f" import echo_server; echo_server.serve('127.0.0.1:{grpc_port}')"],
                    LOAD_CPU, cwd=workdir)
        config = workdir / "gateway.yaml"
        config.write_text(GATEWAY.format(port=gw, up=up, grpc=grpc_port))
        admin = free_port()
        procs.start([sys.executable, "-m", "propylon", "run", str(config), "--access-log",
                     "off", "--admin", f"127.0.0.1:{admin}", "--no-watch", "--log-level",
                     "warning"], PROXY_CPU, cwd=REPO)
        wait_port(gw)
        wait_port(grpc_port)
        rates: dict[str, list[float]] = {"nginx": [], "propylon": []}
        targets = [("nginx", ngx), ("propylon", gw)]
        for round_ in range(args.rounds):
            for name, port in targets if round_ % 2 == 0 else targets[::-1]:
                rates[name].append(h2load(port, args.seconds))
        grpc_direct = grpc_rate(f"127.0.0.1:{grpc_port}", args.seconds, workdir)
        grpc_gateway = grpc_rate(f"127.0.0.1:{gw}", args.seconds, workdir)
    finally:
        procs.stop()
    median = {name: sorted(values)[len(values) // 2] for name, values in rates.items()}
    print(f"# h2load -c 16 -m 10 -D {args.seconds:g}, {args.rounds} rounds; proxies on CPU "
          f"{PROXY_CPU}, load and upstream on CPU {LOAD_CPU}")
    print("| target | req/s median | rounds | vs nginx |")
    print("|---|---:|---|---:|")
    for name in ("nginx", "propylon"):
        runs = ", ".join(f"{v:.0f}" for v in rates[name])
        print(f"| {name} | {median[name]:.0f} | {runs} | {median[name] / median['nginx']:.2f} |")
    print()
    print("| gRPC unary (grpcio client, 16 threads, one channel) | calls/s | vs direct |")
    print("|---|---:|---:|")
    print(f"| direct to the grpcio server | {grpc_direct:.0f} | 1.00 |")
    print(f"| through Propylon (h2c both sides) | {grpc_gateway:.0f} | "
          f"{grpc_gateway / grpc_direct:.2f} |")


if __name__ == "__main__":
    main()
