"""The cost of each policy: wrk against one gateway whose routes each carry one policy.

Usage: ``python bench/policies.py [--seconds 5] [--connections 32] [--same-request
apiKey,jwt]``. Starts the peers'
upstream (one nginx worker with a fixed 100-byte answer, pinned with wrk to CPU 0 while the
gateway runs on CPU 1, as ``../shared/bench/peers/run-peers.sh`` does; a Python echo server
when nginx is missing), a ``redis-server`` (for ``rateLimit`` global; skipped if not
installed), an ext-auth service and one gateway (one worker, access log off); then runs
``wrk`` on each route in turn and prints requests/s and the ratio to the route without
policies, as a Markdown table (each request carries one field besides Host, see
``PADDING``). Limits
are set far above the offered load, so every request does the full check. The auth policies
are measured on their fast path (a repeat credential: cached token, accepted password,
cached ext-auth decision), which is what a steady client costs.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.policies._helpers import (  # noqa: E402
    GatewayProc,
    Upstream,
    free_port,
    poll_until,
    port_open,
    stop,
)

ROUTES: list[tuple[str, str, dict[str, str]]] = [
    ("none", "", {}),
    ("headers", "{headers: {request: {set: {x-a: b}}, response: {set: {x-c: d}}}}", {}),
    ("ipFilter", "{ipFilter: {allow: [127.0.0.0/8], deny: [10.0.0.0/8]}}", {}),
    ("cors", '{cors: {allowOrigins: ["https://*.example.com"]}}',
     {"origin": "https://a.example.com"}),
    ("requestLimits", "{requestLimits: {maxBodySize: 1000, maxHeaderSize: 8000}}", {}),
    ("apiKey", "{apiKey: {header: x-api-key}}", {"x-api-key": "bench-key-0123456789"}),
    ("basicAuth", "{basicAuth: {}}",
     {"authorization": "Basic " + base64.b64encode(b"bench:pw").decode()}),
    ("jwt", "{jwt: {keys: [{file: rsa.pem}], issuer: bench}}", {}),
    ("extAuth", '{extAuth: {url: "http://127.0.0.1:AUTH/", cache: {ttl: 1h, keyHeaders: '
     '[authorization]}}}', {"authorization": "Bearer bench"}),
    ("rateLimit-local", "{rateLimit: {limits: [{requests: 100000000, per: 1s, key: "
     "[client_ip]}]}}", {}),
    ("rateLimit-global", '{rateLimit: {mode: global, redis: {address: "127.0.0.1:REDIS"}, '
     "limits: [{requests: 100000000, per: 1s, key: [client_ip]}]}}", {}),
]


def config(upstream: int, auth: int, redis: int) -> str:
    rules = "\n".join(
        f"    - matches: [{{path: {{prefix: /{name}}}}}]\n"
        f"      forward: {{backends: [{{upstream: echo}}]}}\n"
        + (f"      policies: [{policy}]\n" if policy else "")
        for name, policy, _ in ROUTES
    )
    return f"""apiVersion: propylon.dev/v1
kind: Gateway
metadata: {{name: bench}}
spec:
  listeners: [{{name: web, port: $PORT, address: 127.0.0.1}}]
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {{name: echo}}
spec:
  endpoints: [{{address: 127.0.0.1, port: {upstream}}}]
---
apiVersion: propylon.dev/v1
kind: Consumer
metadata: {{name: bench}}
spec:
  credentials:
    apiKeys: [{{secretRef: {{file: key.txt}}}}]
    basicAuth: [{{username: bench, secretRef: {{file: pw.txt}}}}]
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: bench}}
spec:
  rules:
{rules}""".replace("AUTH", str(auth)).replace("REDIS", str(redis))


def credentials(algorithm: str = "RS256") -> dict[str, str]:
    """The files the config names (a JWT key, the Consumer's secrets), by name; sets the
    jwt route's Authorization to a token signed with that key. ``ES256`` makes a key in a
    steady number of instructions (an RSA key's prime search varies by millions: noise in
    callgrind counts); a steady client's cost is the same, its token being verified once."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        ec.generate_private_key(ec.SECP256R1()) if algorithm == "ES256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048))
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    token = jwt.encode({"iss": "bench", "sub": "b", "exp": int(time.time()) + 3600}, key,
                       algorithm=algorithm)
    ROUTES[7][2]["authorization"] = f"Bearer {token}"
    return {"rsa.pem": pem.decode(), "key.txt": "bench-key-0123456789", "pw.txt": "pw"}


NGINX_UPSTREAM = """worker_processes 1;
daemon off;
pid {run}/upstream.pid;
error_log {run}/upstream-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {run}/u_body;
    proxy_temp_path {run}/u_proxy;
    keepalive_requests 10000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        default_type text/plain;
        location / {{ return 200 "{body}\\n"; }}
    }}
}}
"""
LOAD_CPU, PROXY_CPU = "0", "1"  # as ../shared/bench/peers/run-peers.sh pins them


def pinned(cpu: str) -> list[str]:
    """A command prefix running on ``cpu`` (nothing on a one-CPU machine)."""
    return ["taskset", "-c", cpu] if (os.cpu_count() or 1) >= 2 else []


def pin_tree(pid: int, cpu: str) -> None:
    """Pins a running process and its children (the gateway's workers) to ``cpu``."""
    if (os.cpu_count() or 1) < 2:
        return
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    for each in [pid, *map(int, children.split())]:
        subprocess.run(["taskset", "-a", "-cp", cpu, str(each)], check=True,
                       stdout=subprocess.DEVNULL)


def nginx_upstream(root: Path) -> tuple[subprocess.Popen[bytes], int] | None:
    """The peers' upstream: one nginx worker answering 200 with a 100-byte body, on the load
    CPU; None when nginx is not installed (then a Python upstream shares the CPUs)."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                       else None)
    if binary is None:
        return None
    port = free_port()
    conf = root / "upstream-nginx.conf"
    conf.write_text(NGINX_UPSTREAM.format(run=root, port=port, body="x" * 99))
    proc = subprocess.Popen([*pinned(LOAD_CPU), binary, "-p", str(root), "-e",
                             str(root / "upstream-error.log"), "-c", str(conf)])
    poll_until(lambda: port_open(port))
    return proc, port


def auth_service() -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# Every request carries one field besides Host: the policy's credential, or this one where the
# policy needs none, so that "none" and each policy parse the same number of fields and the
# ratio is the policy's own cost.
PADDING = {"x-bench": "padding-0123456789"}


def wrk(port: int, path: str, headers: dict[str, str], seconds: int, connections: int,
        warm_up: bool = False) -> float:
    args = [*pinned(LOAD_CPU), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    for name, value in (headers or PADDING).items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, f"http://127.0.0.1:{port}/{path}"], capture_output=True,
                         text=True, check=True).stdout
    if "Non-2xx" in out and not warm_up:  # cold caches (extAuth's first calls) may fail
        raise SystemExit(f"{path}: non-2xx answers\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--same-request", default="", metavar="NAMES",
        help="comma-separated policies also compared with the route without policies sent "
             "the very same request (the policy's fields): issue #19's 'against the same "
             "route without it', where the padding field of 'none' is shorter than a token")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = credentials()
        redis_port = free_port()
        redis = None
        if shutil.which("redis-server"):
            redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "",
                                      "--bind", "127.0.0.1"], stdout=subprocess.DEVNULL)
            poll_until(lambda: port_open(redis_port))
        nginx = nginx_upstream(root)
        upstream = None if nginx else Upstream()
        upstream_port = nginx[1] if nginx else upstream.port  # type: ignore[union-attr]
        if nginx is None:
            print("nginx not installed: the upstream is a Python server sharing the CPUs")
        auth = auth_service()
        gw = GatewayProc(root / "gw", config(upstream_port, auth.server_address[1], redis_port),
                         files=files)
        pin_tree(gw.proc.pid, PROXY_CPU)
        try:
            routes = [r for r in ROUTES if r[0] != "rateLimit-global" or redis is not None]
            fields = {name: headers for name, _, headers in routes}
            same = [name for name in args.same_request.split(",") if name]
            if set(same) - set(fields):
                raise SystemExit(f"--same-request: not policies here: {set(same) - set(fields)}")
            # (label, route, fields): each policy's route, then "none" sent each named
            # policy's request
            plan = [(name, name, headers) for name, headers in fields.items()]
            plan += [(f"none, {name}'s request", "none", fields[name]) for name in same]
            for _, path, headers in plan:
                wrk(gw.port, path, headers, 1, args.connections, warm_up=True)
            # Interleaved rounds, the order reversed every other round, medians reported: slow
            # drift of a shared machine then hits every policy alike (as run-peers.sh does).
            samples: dict[str, list[float]] = {label: [] for label, _, _ in plan}
            for round_ in range(args.rounds):
                for label, path, headers in plan if round_ % 2 == 0 else plan[::-1]:
                    samples[label].append(
                        wrk(gw.port, path, headers, args.seconds, args.connections))
            results = {label: statistics.median(values) for label, values in samples.items()}
            base = results["none"]
            print("| policy | requests/s (median) | min-max | relative to none |"
                  + (" relative to none sent the same request |" if same else ""))
            print("|---|---:|---:|---:|" + ("---:|" if same else ""))
            for label, rps in results.items():
                low, high = min(samples[label]), max(samples[label])
                line = f"| {label} | {rps:,.0f} | {low:,.0f}-{high:,.0f} | {rps / base:.2f} |"
                if same:
                    twin = results.get(f"none, {label}'s request")
                    line += f" {rps / twin:.2f} |" if twin else " |"
                print(line)
        finally:
            gw.stop()
            if upstream is not None:
                upstream.stop()
            if nginx is not None:
                stop(nginx[0])
            auth.shutdown()
            if redis is not None:
                stop(redis)


if __name__ == "__main__":
    main()
