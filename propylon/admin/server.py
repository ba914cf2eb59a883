"""The proxy's admin listener: /ready, /live, /config, /metrics, /stats, and
``POST /cache/purge`` (``admin/cache_purge.py``).

It runs in the supervisor, so every answer covers all workers: /metrics sums the workers'
counters (``propylon.observability.exposition``), adds the supervisor's own series and every
process's ``process_*`` / ``python_*``, in OpenMetrics when the scraper's Accept asks. It is
a small HTTP/1.1 server on asyncio streams (one request per connection); nothing here is on
the request path of proxied traffic.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from propylon.admin.cache_purge import purge_request
from propylon.admin.config_dump import config_document
from propylon.observability.certificates import certificate_families
from propylon.observability.exposition import render, snapshot_families
from propylon.observability.log_metrics import LOG_COUNTERS, merge_logs
from propylon.observability.metrics import class_counts, merge_snapshots
from propylon.observability.process_metrics import ProcessInfo, process_families, this_process
from propylon.proxy.http11 import simple_response

if TYPE_CHECKING:
    from propylon.proxy.supervisor import Supervisor

_MAX_HEAD = 16 * 1024
log = logging.getLogger("propylon.admin")


async def start_admin(supervisor: Supervisor, host: str, port: int,
                      sock: socket.socket | None = None) -> asyncio.AbstractServer:
    """Serve on ``sock`` when given (the supervisor's, kept across binary upgrades), else
    bind ``host:port``."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await serve_one(supervisor, reader, writer)
        except ConnectionError as exc:
            # a reset or a broken pipe: the client left (a probe that timed out, a scraper
            # restarting); there is no one to answer and nothing wrong with the proxy
            log.debug("admin client went away: %r", exc)
        finally:
            writer.close()

    if sock is not None:
        return await asyncio.start_server(handle, sock=sock, limit=_MAX_HEAD)
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
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    method, target = (parts[0], parts[1]) if len(parts) == 3 else (b"", b"")
    accept = next((line.split(b":", 1)[1].strip() for line in lines[1:]
                   if line[:7].lower() == b"accept:"), b"")
    if method == b"POST" and target.split(b"?")[0] == b"/cache/purge":
        status, body, ctype = await purge_request(supervisor, reader, lines, target)
    else:
        status, body, ctype = await answer(supervisor, method, target.split(b"?")[0],
                                           accept.decode("latin-1"))
    writer.write(simple_response(status, body, close=True, content_type=ctype))
    await writer.drain()


_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"


async def answer(supervisor: Supervisor, method: bytes, path: bytes, accept: str = ""
                 ) -> tuple[int, bytes, bytes]:
    if method not in (b"GET", b"HEAD"):
        return 405, b"method not allowed\n", _TEXT
    if path == b"/live":
        return 200, b"live\n", _TEXT
    if path == b"/ready":
        return (200, b"ready\n", _TEXT) if supervisor.ready() else (503, b"not ready\n", _TEXT)
    if path == b"/config":
        # 10,000 Routes: 17 MB of JSON, a second of work, kept off the supervisor's event loop
        return 200, await asyncio.to_thread(config_document, supervisor.snapshot), _JSON
    if path == b"/metrics":
        body, content_type = await metrics_exposition(supervisor, accept)
        return 200, body, content_type.encode()
    if path == b"/stats":
        return 200, _json(await stats_document(supervisor)), _JSON
    return 404, b"not found\n", _TEXT


async def metrics_exposition(supervisor: Supervisor, accept: str) -> tuple[bytes, str]:
    workers = await supervisor.worker_stats()
    snapshot = merge_snapshots([stats for _, _, stats in workers if stats is not None])
    snapshot["logs"] = merge_logs([snapshot, {"logs": LOG_COUNTERS.snapshot()}])  # + this one's
    processes = [this_process()] + [
        ProcessInfo(str(index), pid, stats.get("gc") if stats is not None else None)
        for index, pid, stats in workers if pid is not None
    ]
    families = [
        *snapshot_families(snapshot), *supervisor_families(supervisor),
        *certificate_families(supervisor.snapshot), *process_families(processes),
    ]
    if supervisor.resolver is not None:  # dnspython loads only when a configuration uses it
        from propylon.proxy.resolver import dns_families

        families += dns_families(supervisor.resolver)
    return render(families, accept)


def supervisor_families(supervisor: Supervisor) -> list[Metric]:
    version = supervisor.snapshot.version if supervisor.snapshot else ""
    reloads = CounterMetricFamily("propylon_config_reloads", "Configuration reloads, by result "
                                  "(failure: refused, the previous version kept serving).",
                                  labels=["result"])
    reloads.add_metric(["success"], supervisor.reloads.succeeded)
    reloads.add_metric(["failure"], supervisor.reloads.failed)
    info = GaugeMetricFamily("propylon_config_info", "The configuration version being served.",
                             labels=["version"])
    info.add_metric([version], 1)
    installed = GaugeMetricFamily("propylon_config_installed_timestamp_seconds",
                                  "When the version being served was installed, Unix time.",
                                  value=supervisor.installed_at)
    last_ok = GaugeMetricFamily("propylon_config_last_reload_successful",
                                "1 unless the last reload was refused.",
                                value=0 if supervisor.reloads.last_failed else 1)
    workers = GaugeMetricFamily("propylon_workers", "Worker processes alive.",
                                value=sum(h.process.is_alive() for h in supervisor.handles))
    return [reloads, info, installed, last_ok, workers]


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

    def by_class(codes: list[int]) -> dict[str, int]:
        counts = class_counts(codes)
        return {f"{c}xx": counts[c] for c in range(1, 6) if counts[c]}

    return {
        "routes": [
            {"gateway": g, "route": r, "rule": rule, "responses": by_class(item["codes"]),
             "requests": sum(item["codes"]), "latency_seconds_sum": round(item["sum"], 6)}
            for item in snapshot["routes"] for g, r, rule in [item["key"]]
        ],
        "upstreams": [
            {"gateway": g, "upstream": u, "responses": by_class(item["codes"]),
             **item["counters"]}
            for item in snapshot["upstreams"] for g, u in [item["key"]]
        ],
        "endpoints": snapshot.get("endpoints", []),
        "panic": snapshot.get("panic", []),
    }


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"
