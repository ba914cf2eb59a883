"""The cost of tracing: wrk against three gateways that differ only in ``tracing``.

Usage: ``python bench/tracing.py [--seconds 10] [--connections 32] [--rounds 3]``. Starts an
echo upstream, an OTLP/HTTP collector stand-in (accepts every export, decodes nothing) and
three gateways of one worker each, access log off: tracing off, ``sampling: 0.01`` and
``sampling: 1.0``. Requests carry no ``traceparent``, so the ratio decides. wrk runs against
each in turn, in interleaved rounds (the order reversed every other round, medians reported,
as bench/policies.py does), and a Markdown table gives requests/s and the ratio to "off".

A full measurement: ``python bench/tracing.py --seconds 10 --rounds 5`` on an otherwise idle
machine. ``--seconds 1 --rounds 1`` is a smoke test of the script, not a measurement.
The per-request Python cost, without sockets, is ``bench/micro_exchange.py --tracing RATIO``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.policies import wrk  # noqa: E402
from tests.integration.policies._helpers import GatewayProc, Upstream  # noqa: E402

VARIANTS: list[tuple[str, str]] = [
    ("off", ""),
    ("1%", "  tracing: {otlpEndpoint: 'COLLECTOR', sampling: 0.01}\n"),
    ("100%", "  tracing: {otlpEndpoint: 'COLLECTOR', sampling: 1.0}\n"),
]


def config(upstream: int, tracing: str, collector: str) -> str:
    return f"""apiVersion: propylon.dev/v1
kind: Gateway
metadata: {{name: bench}}
spec:
  listeners: [{{name: web, port: $PORT, address: 127.0.0.1}}]
{tracing.replace("COLLECTOR", collector)}---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {{name: echo}}
spec:
  endpoints: [{{address: 127.0.0.1, port: {upstream}}}]
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: bench}}
spec:
  rules:
    - matches: [{{path: {{prefix: /}}}}]
      forward: {{backends: [{{upstream: echo}}]}}
"""


def collector() -> ThreadingHTTPServer:
    """Takes OTLP/HTTP exports and throws them away (a collector that keeps up)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sink = collector()
    url = f"http://127.0.0.1:{sink.server_address[1]}"
    upstream = Upstream()
    gateways: dict[str, GatewayProc] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for name, tracing in VARIANTS:
                gateways[name] = GatewayProc(Path(tmp) / name.strip("%") / "gw",
                                             config(upstream.port, tracing, url))
            for gw in gateways.values():
                wrk(gw.port, "", {}, 1, args.connections)  # warm up pools and caches
            samples: dict[str, list[float]] = {name: [] for name in gateways}
            names = list(gateways)
            for round_ in range(args.rounds):
                for name in names if round_ % 2 == 0 else names[::-1]:
                    samples[name].append(
                        wrk(gateways[name].port, "", {}, args.seconds, args.connections))
            base = statistics.median(samples["off"])
            print("| tracing | requests/s (median) | min-max | relative to off |")
            print("|---|---:|---:|---:|")
            for name, values in samples.items():
                rps = statistics.median(values)
                print(f"| {name} | {rps:,.0f} | {min(values):,.0f}-{max(values):,.0f} "
                      f"| {rps / base:.2f} |")
        finally:
            for gw in gateways.values():
                gw.stop()
            upstream.stop()
            sink.shutdown()


if __name__ == "__main__":
    main()
