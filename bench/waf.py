"""The cost of the ``waf`` policy: wrk against one gateway whose routes differ only by it.

Usage: ``python bench/waf.py [--seconds 5] [--connections 16] [--rounds 3]``. Starts the echo
upstream and one gateway (one worker, access log off) with three routes (no policy, ``waf``
in detect mode, ``waf`` in block mode; full CRS at paranoia 1), then runs ``wrk`` on each
route with a benign GET and with a 10 KiB JSON POST, in interleaved rounds, and prints
requests/s and the ratio to the route without the policy as a Markdown table (a row per
workload and mode). Every request is benign, so both modes do the whole inspection.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.policies._helpers import GatewayProc, Upstream  # noqa: E402

MODES = ("none", "detect", "block")
RECORDS = [{"id": i, "name": f"user {i}", "email": f"user{i}@example.com", "active": True,
            "score": i * 1.5, "tags": ["a", "b"]} for i in range(200)]


def json_body(size: int = 10240) -> bytes:
    """A JSON document of about ``size`` bytes made of ordinary records."""
    records = []
    for record in RECORDS:
        records.append(record)
        if len(json.dumps({"items": records})) >= size:
            break
    return json.dumps({"items": records}).encode()


def config() -> str:
    rules = "".join(
        f"    - matches: [{{path: {{prefix: /{mode}}}}}]\n"
        f"      forward: {{backends: [{{upstream: echo}}]}}\n"
        + (f"      policies: [{{waf: {{mode: {mode}}}}}]\n" if mode != "none" else "")
        for mode in MODES
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
  endpoints: [{{address: 127.0.0.1, port: UPSTREAM}}]
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: bench}}
spec:
  rules:
{rules}"""


def post_script(root: Path, body: bytes) -> Path:
    script = root / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
        'wrk.headers["Content-Type"] = "application/json"\n')
    return script


def wrk(port: int, path: str, seconds: int, connections: int, script: Path | None) -> float:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
            "-H", "User-Agent: bench/1.0", "-H", "Accept: */*"]
    if script is not None:
        args += ["-s", str(script)]
    out = subprocess.run([*args, f"http://127.0.0.1:{port}/{path}/api/items?page=2"],
                         capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"{path}: non-2xx answers (a false positive?)\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="seconds per route first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        body = json_body()
        workloads = {"GET": None, f"POST {len(body) // 1024} KiB JSON": post_script(root, body)}
        upstream = Upstream()
        gw = GatewayProc(root / "gw", config().replace("UPSTREAM", str(upstream.port)))
        try:
            runs = [(load, mode) for load in workloads for mode in MODES]
            if args.warmup:
                for load, mode in runs:
                    wrk(gw.port, mode, args.warmup, args.connections, workloads[load])
            samples: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
            for round_ in range(args.rounds):
                for load, mode in runs if round_ % 2 == 0 else runs[::-1]:
                    samples[(load, mode)].append(
                        wrk(gw.port, mode, args.seconds, args.connections, workloads[load]))
            print("| workload | waf | requests/s (median) | min-max | relative to none |")
            print("|---|---|---:|---:|---:|")
            for load, mode in runs:
                values = samples[(load, mode)]
                rps, base = statistics.median(values), statistics.median(samples[(load, "none")])
                print(f"| {load} | {mode} | {rps:,.0f} | {min(values):,.0f}-{max(values):,.0f} "
                      f"| {rps / base:.2f} |")
        finally:
            gw.stop()
            upstream.stop()


if __name__ == "__main__":
    main()
