"""The proxy's admin listener: /ready, /live, /config, /metrics, /stats.

It runs in the supervisor, so every answer covers all workers: /metrics sums the workers'
counters. It is a small HTTP/1.1 server on asyncio streams (one request per connection);
nothing here is on the request path of proxied traffic.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from propylon import ir
from propylon.admin.redact import redact
from propylon.observability.metrics import render_prometheus
from propylon.proxy.http11 import simple_response

if TYPE_CHECKING:
    from propylon.proxy.supervisor import Supervisor

_MAX_HEAD = 16 * 1024
log = logging.getLogger("propylon.admin")


async def start_admin(supervisor: Supervisor, host: str, port: int) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await serve_one(supervisor, reader, writer)
        except ConnectionError as exc:
            # a reset or a broken pipe: the client left (a probe that timed out, a scraper
            # restarting); there is no one to answer and nothing wrong with the proxy
            log.debug("admin client went away: %r", exc)
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=_MAX_HEAD)


async def serve_one(
    supervisor: Supervisor, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Read one request head and answer it; an incomplete or oversized head gets no answer."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        return
    if len(head) > _MAX_HEAD:
        return
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    method, target = (parts[0], parts[1]) if len(parts) == 3 else (b"", b"")
    status, body, ctype = await answer(supervisor, method, target.split(b"?")[0])
    writer.write(simple_response(status, body, close=True, content_type=ctype))
    await writer.drain()


_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"
_PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"


async def answer(supervisor: Supervisor, method: bytes, path: bytes) -> tuple[int, bytes, bytes]:
    if method not in (b"GET", b"HEAD"):
        return 405, b"method not allowed\n", _TEXT
    if path == b"/live":
        return 200, b"live\n", _TEXT
    if path == b"/ready":
        return (200, b"ready\n", _TEXT) if supervisor.ready() else (503, b"not ready\n", _TEXT)
    if path == b"/config":
        data: Any = redact(ir.to_data(supervisor.snapshot)) if supervisor.snapshot else None
        return 200, _json(data), _JSON
    if path == b"/metrics":
        snapshot = await supervisor.stats()
        return 200, render_prometheus(snapshot, supervisor_metrics(supervisor)).encode(), \
            _PROMETHEUS
    if path == b"/stats":
        return 200, _json(await stats_document(supervisor)), _JSON
    return 404, b"not found\n", _TEXT


def supervisor_metrics(supervisor: Supervisor) -> list[str]:
    version = supervisor.snapshot.version if supervisor.snapshot else ""
    return [
        "# HELP propylon_config_reloads_total Configuration reloads, by result.",
        "# TYPE propylon_config_reloads_total counter",
        f'propylon_config_reloads_total{{result="success"}} {supervisor.reloads.succeeded}',
        f'propylon_config_reloads_total{{result="failure"}} {supervisor.reloads.failed}',
        "# HELP propylon_config_info The configuration version being served.",
        "# TYPE propylon_config_info gauge",
        f'propylon_config_info{{version="{version}"}} 1',
        "# HELP propylon_workers Worker processes alive.",
        "# TYPE propylon_workers gauge",
        f"propylon_workers {sum(h.process.is_alive() for h in supervisor.handles)}",
    ]


async def stats_document(supervisor: Supervisor) -> dict[str, Any]:
    return {
        "version": supervisor.snapshot.version if supervisor.snapshot else None,
        "ready": supervisor.ready(),
        "workers": [
            {"pid": h.process.pid, "alive": h.process.is_alive(), "version": h.version}
            for h in supervisor.handles
        ],
        "reloads": {
            "succeeded": supervisor.reloads.succeeded,
            "failed": supervisor.reloads.failed,
            "last_error": supervisor.reloads.last_error,
        },
        "warnings": supervisor.warnings,
        **readable_counters(await supervisor.stats()),
    }


def readable_counters(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The merged metrics snapshot as named fields instead of positional lists."""

    def by_class(counts: list[int]) -> dict[str, int]:
        return {f"{c}xx": counts[c] for c in range(1, 6) if counts[c]}

    return {
        "routes": [
            {"gateway": g, "route": r, "rule": rule, "responses": by_class(counts),
             "requests": sum(counts), "latency_seconds_sum": round(total, 6)}
            for (g, r, rule), counts, _, total in snapshot["routes"]
        ],
        "upstreams": [
            {"gateway": g, "upstream": u, "responses": by_class(counts), **counters}
            for (g, u), counts, counters in snapshot["upstreams"]
        ],
        "endpoints": snapshot.get("endpoints", []),
        "panic": snapshot.get("panic", []),
    }


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"
