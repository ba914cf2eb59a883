"""Active health checks, run once per proxy (in the supervisor), not once per worker.

Each endpoint of an Upstream with ``healthCheck.active`` gets a probe loop: an HTTP GET (over
TLS when the Upstream uses TLS) whose status must be one of ``expectedStatuses``, a TCP
connect, or a gRPC ``grpc.health.v1.Health/Check`` over HTTP/2 (``propylon/net/grpc_health``).
``unhealthyThreshold`` failures in a row mark the endpoint unhealthy and
``healthyThreshold`` successes in a row mark it healthy again; endpoints start healthy. Probes
are spaced by ``interval`` plus a random jitter so that many proxies do not probe in step.
Every verdict change is handed to ``on_change`` (the supervisor sends it to every worker).
Probes go through the gateway's one HTTP client (``propylon.net.httpclient``), on a
connection of their own (``Connection: close``), the Upstream's SNI and CA as its requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import ssl
from collections.abc import Callable

from propylon import ir
from propylon.net.httpclient import HttpClient, HttpError
from propylon.net.tls import client_context
from propylon.proxy.proxy_protocol import build_proxy_header
from propylon.runtime import discovery

log = logging.getLogger("propylon.health")

Key = tuple[str, str]  # (upstream key, "address:port")


class HealthChecker:
    def __init__(self, on_change: Callable[[str, str, bool], None]) -> None:
        self.on_change = on_change
        self.verdicts: dict[Key, bool] = {}
        self._probes: dict[Key, tuple[ir.UpstreamIR, asyncio.Task[None]]] = {}
        self._contexts: dict[tuple[ir.UpstreamTLSIR, bool], ssl.SSLContext] = {}

    def update(self, snapshot: ir.SnapshotIR, answers: discovery.Answers | None = None
               ) -> None:
        """Probe exactly the endpoints of ``snapshot``'s actively checked upstreams: every
        failover group's, and the addresses DNS gave (``answers``) for names under ``dns``."""
        wanted: dict[Key, tuple[ir.UpstreamIR, ir.EndpointIR]] = {}
        for gateway in snapshot.gateways:
            for upstream in gateway.upstreams:
                if upstream.active_health is None:
                    continue
                for found in discovery.all_endpoints(upstream, answers or {}):
                    endpoint, probed = found.endpoint, upstream
                    tls = upstream.tls
                    if tls is not None and tls.sni is None and found.name is not None:
                        # TLS verified against the name the address was resolved from
                        probed = dataclasses.replace(
                            upstream, tls=dataclasses.replace(tls, sni=found.name))
                    wanted[(upstream.key, f"{endpoint.address}:{endpoint.port}")] = (
                        probed, endpoint)
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
        client = self._client(upstream, endpoint)
        await asyncio.sleep(random.uniform(0, spec.interval_jitter))
        while True:
            if spec.type == "grpc":
                ok = await self._grpc_probe(upstream, endpoint)
            else:
                ok = await probe(client, spec)
            streak = 0 if ok == healthy else streak + 1
            threshold = spec.healthy_threshold if not healthy else spec.unhealthy_threshold
            if streak >= threshold:
                healthy, streak = ok, 0
                self.verdicts[key] = healthy
                log.warning("upstream %s: endpoint %s is now %s", key[0], key[1],
                            "healthy" if healthy else "unhealthy")
                self.on_change(key[0], key[1], healthy)
            await asyncio.sleep(spec.interval + random.uniform(0, spec.interval_jitter))

    def _client(self, upstream: ir.UpstreamIR, endpoint: ir.EndpointIR) -> HttpClient:
        """A client of its own per endpoint: one connection per probe, TLS as the Upstream's
        requests (its CA, client certificate and SNI), Host ``spec.host`` or the address."""
        spec, tls = upstream.active_health, upstream.tls
        assert spec is not None
        address = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
        # an Upstream that expects a PROXY header gets one naming no client (v2 LOCAL, v1
        # UNKNOWN), as HAProxy's check-send-proxy does
        preamble = (build_proxy_header(upstream.proxy_protocol_version, None)
                    if upstream.proxy_protocol_version else b"")
        return HttpClient(
            f"{'https' if tls else 'http'}://{address}:{endpoint.port}", 1, self._context(tls),
            keep_alive=False, server_hostname=(tls.sni or endpoint.address) if tls else None,
            host=spec.host or endpoint.address, preamble=preamble)

    async def _grpc_probe(self, upstream: ir.UpstreamIR, endpoint: ir.EndpointIR) -> bool:
        """grpc.health.v1.Health/Check over HTTP/2, TLS (ALPN h2) as the Upstream's requests."""
        spec, tls = upstream.active_health, upstream.tls
        assert spec is not None
        preamble = (build_proxy_header(upstream.proxy_protocol_version, None)
                    if upstream.proxy_protocol_version else b"")
        from propylon.net import grpc_health  # h2 loads when a gRPC check first runs

        return await grpc_health.check(
            endpoint.address, endpoint.port, spec.service, spec.host or endpoint.address,
            spec.timeout, self._context(tls, http2=True),
            (tls.sni or endpoint.address) if tls else None, preamble)

    def _context(self, tls: ir.UpstreamTLSIR | None, http2: bool = False
                 ) -> ssl.SSLContext | None:
        if tls is None:
            return None
        context = self._contexts.get((tls, http2))
        if context is None:
            context = self._contexts[(tls, http2)] = client_context(tls, http2)
        return context


_PROBE_HEADERS = [(b"user-agent", b"propylon-health-check")]


async def probe(client: HttpClient, spec: ir.ActiveHealthIR) -> bool:
    """One probe: a connection (``tcp``), or a GET whose final status must be expected. Only
    the answer's head is read; the connection is closed after it."""
    try:
        if spec.type == "tcp":
            await client.check_connect(spec.timeout)
            return True
        async with client.stream(b"GET", spec.path.encode("latin-1"), _PROBE_HEADERS,
                                 spec.timeout) as answer:
            return answer.status in spec.expected_statuses
    except HttpError:
        return False
