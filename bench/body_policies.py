"""The cost and worth of the ``cache`` and ``compression`` policies, against nginx.

Usage::

    python bench/body_policies.py [--seconds 5] [--connections 16] [--rounds 3] [--warmup 1]
    python bench/body_policies.py --smoke      # one request per target, one 1 s wrk run

Starts an nginx upstream (one worker: a 100-byte ``Cache-Control: public, max-age=3600``
answer at ``/small`` and a 100 KiB JSON document at ``/data.json``), one gateway (one worker,
access log off) whose routes differ only by their policy (none, ``cache``, ``compression``
with gzip only, level 6), and one nginx proxy (one worker) with ``proxy_cache`` on one port
and ``gzip on`` (level 6) on another, both forwarding to the same upstream. Then ``wrk`` runs
on each target in interleaved rounds (the order reversed every other round) and a Markdown
table gives requests/s (median, min-max) and the ratio to the gateway's route without the
policy:

- cache: a hit (the same URL again and again), a miss (a new query string per request, so
  every request is looked up, forwarded and stored; ``maxBytes`` bounds the store), nginx
  ``proxy_cache`` serving the same hit;
- compression: the 100 KiB JSON with ``Accept-Encoding: gzip`` through the gateway with and
  without the policy, and through nginx ``gzip on``.

The gateway and the proxies share the machine with wrk: compare within one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.policies._helpers import GatewayProc  # noqa: E402
from tests.support.net import free_port, poll_until  # noqa: E402

GZIP = {"Accept-Encoding": "gzip"}


def json_document(size: int = 100 * 1024) -> bytes:
    items, out = [], b""
    while len(out) < size:
        n = len(items)
        items.append({"id": n, "name": f"item {n}", "price": n * 1.25, "tags": ["a", "b"],
                      "description": f"an ordinary catalogue entry number {n}"})
        out = json.dumps({"items": items}).encode()
    return out


UPSTREAM_CONF = """worker_processes 1;
pid {root}/upstream.pid;
error_log {root}/upstream-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  types {{ application/json json; }}
  server {{
    listen 127.0.0.1:{port};
    keepalive_requests 100000;
    root {root}/www;
    location = /small {{
      add_header Cache-Control "public, max-age=3600";
      default_type text/plain;
      return 200 "{small}";
    }}
    location = /data.json {{ add_header Cache-Control "public, max-age=3600"; }}
  }}
}}
"""

PROXY_CONF = """worker_processes 1;
pid {root}/proxy.pid;
error_log {root}/proxy-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  proxy_cache_path {root}/nginx-cache keys_zone=bench:10m max_size=256m;
  upstream origin {{ server 127.0.0.1:{upstream}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{cache_port};
    location / {{
      proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_cache bench; proxy_cache_valid 200 1h;
    }}
  }}
  server {{
    listen 127.0.0.1:{gzip_port};
    gzip on; gzip_comp_level 6; gzip_types application/json; gzip_proxied any;
    gzip_min_length 1024;
    location / {{
      proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
    }}
  }}
}}
"""


def gateway_config(upstream: int) -> str:
    routes = {
        "plain": "",
        "cache": "      policies: [{cache: {maxBytes: 64MiB}}]\n",
        "gzip": "      policies: [{compression: {algorithms: [gzip]}}]\n",
    }
    rules = "".join(
        f"    - matches: [{{path: {{prefix: /{name}/}}}}]\n"
        f"      forward: {{backends: [{{upstream: origin}}], rewrite: {{prefix: /}}}}\n{policy}"
        for name, policy in routes.items())
    return f"""apiVersion: propylon.dev/v1
kind: Gateway
metadata: {{name: bench}}
spec:
  listeners: [{{name: web, port: $PORT, address: 127.0.0.1}}]
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {{name: origin}}
spec:
  endpoints: [{{address: 127.0.0.1, port: {upstream}}}]
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: bench}}
spec:
  rules:
{rules}"""


class Nginx:
    def __init__(self, root: Path, name: str, conf: str) -> None:
        path = root / f"{name}.conf"
        path.write_text(conf)
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(root), "-c", str(path), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- measuring -------------------------------------------------------------------------------
MISS_SCRIPT = """counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/cache/small?n=" .. counter)
end
"""


def wrk(url: str, seconds: int, connections: int, headers: dict[str, str],
        script: Path | None) -> float:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    if script is not None:
        args += ["-s", str(script)]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"{url}: non-2xx answers\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def check(url: str, headers: dict[str, str], expect: dict[str, str]) -> None:
    """One request: the target answers 200 with the fields the comparison relies on."""
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()
        for name, value in expect.items():
            got = answer.headers.get(name)
            if got != value:
                raise SystemExit(f"{url}: {name} is {got!r}, expected {value!r}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="seconds per target first")
    parser.add_argument("--smoke", action="store_true",
                        help="check every target once and run wrk for 1 s on one of them")
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian package {tool})")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # nginx workers may run as another user
        (root / "www").mkdir()
        (root / "www" / "data.json").write_bytes(json_document())
        ports = {name: free_port() for name in ("upstream", "cache", "gzip")}
        upstream = Nginx(root, "upstream", UPSTREAM_CONF.format(
            root=root, port=ports["upstream"], small="x" * 100))
        proxy = Nginx(root, "proxy", PROXY_CONF.format(
            root=root, upstream=ports["upstream"], cache_port=ports["cache"],
            gzip_port=ports["gzip"]))
        gw = None
        try:
            for port in ports.values():
                poll_until(lambda port=port: _answers(port), 10, message=f"nginx :{port}")
            gw = GatewayProc(root / "gw", gateway_config(ports["upstream"]))
            base = f"http://127.0.0.1:{gw.port}"
            miss_script = root / "miss.lua"
            miss_script.write_text(MISS_SCRIPT)
            # (group, target, url, headers, wrk script, fields one answer must carry)
            targets = [
                ("cache", "gateway, no policy", f"{base}/plain/small", {}, None, {}),
                ("cache", "gateway cache hit", f"{base}/cache/small", {}, None,
                 {"x-propylon-cache": "hit"}),
                ("cache", "gateway cache miss", f"{base}/cache/small", {}, miss_script, {}),
                ("cache", "nginx proxy_cache hit", f"http://127.0.0.1:{ports['cache']}/small",
                 {}, None, {}),
                ("compression", "gateway, no policy", f"{base}/plain/data.json", GZIP, None,
                 {}),
                ("compression", "gateway gzip", f"{base}/gzip/data.json", GZIP, None,
                 {"Content-Encoding": "gzip"}),
                ("compression", "nginx gzip on", f"http://127.0.0.1:{ports['gzip']}/data.json",
                 GZIP, None, {"Content-Encoding": "gzip"}),
            ]
            for _, _, url, headers, _, expect in targets:
                check(url, headers, {})  # the cache's first answer is a miss
                check(url, headers, expect)
            if args.smoke:
                rps = wrk(targets[1][2], 1, 1, {}, None)
                print(f"smoke: every target answers; gateway cache hit {rps:,.0f} requests/s "
                      "(1 s, 1 connection)")
                return
            run(targets, args)
        finally:
            if gw is not None:
                gw.stop()
            proxy.stop()
            upstream.stop()


def run(targets: list[tuple], args: argparse.Namespace) -> None:  # type: ignore[type-arg]
    if args.warmup:
        for _, _, url, headers, script, _ in targets:
            wrk(url, args.warmup, args.connections, headers, script)
    samples: dict[int, list[float]] = {i: [] for i in range(len(targets))}
    order = list(range(len(targets)))
    for round_ in range(args.rounds):
        for i in order if round_ % 2 == 0 else order[::-1]:
            _, _, url, headers, script, _ = targets[i]
            samples[i].append(wrk(url, args.seconds, args.connections, headers, script))
            time.sleep(0.2)
    print("| group | target | requests/s (median) | min-max | relative to no policy |")
    print("|---|---|---:|---:|---:|")
    baselines = {group: statistics.median(samples[i])
                 for i, (group, name, *_) in enumerate(targets) if name.endswith("no policy")}
    for i, (group, name, *_) in enumerate(targets):
        values = samples[i]
        median = statistics.median(values)
        print(f"| {group} | {name} | {median:,.0f} | {min(values):,.0f}-{max(values):,.0f} "
              f"| {median / baselines[group]:.2f} |")


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/small", timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
