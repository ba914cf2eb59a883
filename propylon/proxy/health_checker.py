"""Active health checks, run once per proxy (in the supervisor), not once per worker.

Each endpoint of an Upstream with ``healthCheck.active`` gets a probe loop: an HTTP GET (over
TLS when the Upstream uses TLS) whose status must be one of ``expectedStatuses``, or a TCP
connect. ``unhealthyThreshold`` failures in a row mark the endpoint unhealthy and
``healthyThreshold`` successes in a row mark it healthy again; endpoints start healthy. Probes
are spaced by ``interval`` plus a random jitter so that many proxies do not probe in step.
Every verdict change is handed to ``on_change`` (the supervisor sends it to every worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable

from propylon import ir
from propylon.proxy.tls import client_context

log = logging.getLogger("propylon.health")

Key = tuple[str, str]  # (upstream key, "address:port")


class HealthChecker:
    def __init__(self, on_change: Callable[[str, str, bool], None]) -> None:
        self.on_change = on_change
        self.verdicts: dict[Key, bool] = {}
        self._probes: dict[Key, tuple[ir.UpstreamIR, asyncio.Task[None]]] = {}
        self._contexts: dict[ir.UpstreamTLSIR, ssl.SSLContext] = {}

    def update(self, snapshot: ir.SnapshotIR) -> None:
        """Probe exactly the endpoints of ``snapshot``'s actively checked upstreams."""
        wanted: dict[Key, tuple[ir.UpstreamIR, ir.EndpointIR]] = {}
        for gateway in snapshot.gateways:
            for upstream in gateway.upstreams:
                if upstream.active_health is None:
                    continue
                for endpoint in upstream.endpoints:
                    wanted[(upstream.key, f"{endpoint.address}:{endpoint.port}")] = (
                        upstream, endpoint)
        for key in list(self._probes):
            old, task = self._probes[key]
            if key not in wanted or wanted[key][0] != old:
                task.cancel()
                del self._probes[key]
                if key not in wanted:
                    self.verdicts.pop(key, None)
        for key, (upstream, endpoint) in wanted.items():
            if key not in self._probes:
                task = asyncio.ensure_future(self._probe_loop(key, upstream, endpoint))
                self._probes[key] = (upstream, task)

    def stop(self) -> None:
        for _, task in self._probes.values():
            task.cancel()
        self._probes.clear()

    async def _probe_loop(
        self, key: Key, upstream: ir.UpstreamIR, endpoint: ir.EndpointIR
    ) -> None:
        spec = upstream.active_health
        assert spec is not None
        healthy = self.verdicts.setdefault(key, True)
        streak = 0  # consecutive results contradicting the current verdict
        await asyncio.sleep(random.uniform(0, spec.interval_jitter))
        while True:
            ok = await self.probe(upstream, endpoint)
            streak = 0 if ok == healthy else streak + 1
            threshold = spec.healthy_threshold if not healthy else spec.unhealthy_threshold
            if streak >= threshold:
                healthy, streak = ok, 0
                self.verdicts[key] = healthy
                log.warning("upstream %s: endpoint %s is now %s", key[0], key[1],
                            "healthy" if healthy else "unhealthy")
                self.on_change(key[0], key[1], healthy)
            await asyncio.sleep(spec.interval + random.uniform(0, spec.interval_jitter))

    async def probe(self, upstream: ir.UpstreamIR, endpoint: ir.EndpointIR) -> bool:
        spec = upstream.active_health
        assert spec is not None
        context = self._context(upstream.tls)
        writer = None
        try:
            async with asyncio.timeout(spec.timeout):
                reader, writer = await asyncio.open_connection(
                    endpoint.address, endpoint.port, ssl=context,
                    server_hostname=(upstream.tls.sni or endpoint.address)
                    if upstream.tls is not None else None,
                )
                if spec.type == "tcp":
                    return True
                host = spec.host or endpoint.address
                writer.write(
                    f"GET {spec.path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
                    "User-Agent: propylon-health-check\r\n\r\n".encode("latin-1")
                )
                status = await _final_status(reader)
        except (OSError, TimeoutError, ssl.SSLError, ValueError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError):
            return False
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        return status in spec.expected_statuses

    def _context(self, tls: ir.UpstreamTLSIR | None) -> ssl.SSLContext | None:
        if tls is None:
            return None
        context = self._contexts.get(tls)
        if context is None:
            context = self._contexts[tls] = client_context(tls)
        return context


_MAX_INTERIM = 8


async def _final_status(reader: asyncio.StreamReader) -> int:
    """The status of the final answer: interim 1xx answers (``103 Early Hints``) are read
    past, never taken as the verdict."""
    for _ in range(_MAX_INTERIM):
        head = await reader.readuntil(b"\r\n\r\n")
        parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not (
                len(parts[1]) == 3 and parts[1].isdigit()):
            raise ValueError("not an HTTP/1.x response")
        status = int(parts[1])
        if status >= 200 or status == 101:
            return status
    raise ValueError("too many interim (1xx) answers")
