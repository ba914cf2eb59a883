"""YAML 1.1 surprises (issue #15 item 5): where a string is expected, the text the user wrote
is what the gateway uses. ``x-version: 1.10`` used to be sent as ``1.1`` and ``x-flag: NO`` as
``False``; typed fields still take ``yes``, ``010`` or ``1.10`` as before."""

from __future__ import annotations

from propylon.config._yaml import parse_documents
from tests.support.client import roundtrip


def test_header_values_are_sent_as_written(gateways, upstreams) -> None:
    app = upstreams("app")
    gw = gateways(lambda port: f"""apiVersion: propylon.dev/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  listeners: [{{name: web, port: {port}, address: 127.0.0.1}}]
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: main}}
spec:
  rules:
    - matches: [{{path: {{prefix: /}}}}]
      forward: {{backends: [{{upstream: app}}], timeout: 10s}}
      policies:
        - headers:
            request:
              set: {{x-version: 1.10, x-flag: NO, x-mode: on, x-zip: 010, x-hex: 0x1F,
                     x-real: 2.5, x-date: 2024-01-01, x-stamp: 2001-12-14 21:59:43.10}}
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {{name: app}}
spec:
  endpoints: [{{address: 127.0.0.1, port: {app.port}}}]
""")
    assert roundtrip(gw.port, "GET", "/").status == 200
    sent = {name: app.last.header(name) for name in (
        "x-version", "x-flag", "x-mode", "x-zip", "x-hex", "x-real", "x-date", "x-stamp")}
    assert sent == {"x-version": "1.10", "x-flag": "NO", "x-mode": "on", "x-zip": "010",
                    "x-hex": "0x1F", "x-real": "2.5", "x-date": "2024-01-01",
                    "x-stamp": "2001-12-14 21:59:43.10"}


def test_scalars_as_loaded() -> None:
    (doc,), errors = parse_documents(
        "a: yes\nb: off\nc: true\nd: 1.10\ne: 010\nf: 8080\ng: 1.5\nh: 2024-01-01\n"
        "i: 2001-12-14t21:59:43.10-05:00\n", "inline.yaml")
    assert errors == []
    assert doc.data == {"a": "yes", "b": "off", "c": True, "d": "1.10", "e": "010",
                        "f": 8080, "g": 1.5, "h": "2024-01-01",
                        "i": "2001-12-14t21:59:43.10-05:00"}
