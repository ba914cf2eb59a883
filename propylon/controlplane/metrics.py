"""The control plane's ``/metrics`` (``prometheus_client``): versions, fleets, propagation.

Series (all ``propylon_control_``, documented in docs/controlplane.md):
  gateway_version_info{gateway,version}    1 for the IR version this replica serves the
                                           fleet: the stable one while a progressive
                                           rollout is under way, rolled back or aborted
  gateway_versions_total{gateway}          IR versions published (one per apply that
                                           changes the Gateway)
  gateway_published_timestamp_seconds{gateway}
  proxies_connected{gateway}               proxies that polled within CONNECTED_FOR
  proxies_current{gateway}                 connected ones running the version they are
                                           served (during a rollout: the candidate for
                                           those given it, the stable one for the others)
  proxy_reports_total{gateway,result}      ACK / NACK reports received by this replica
  propagation_seconds{gateway}             histogram: a version's publication to each
                                           proxy's ACK of it
  ir_answers_total{gateway,form}           IR polls answered with a ``delta`` or a ``full``
                                           snapshot (``ir_deltas.py``)
  translations_total{result}, applies_total{result}, ready
plus ``process_*`` and ``python_*``.

Cardinality: the only free label value is ``gateway``, and it is always the key of a Gateway
in the current configuration (``retain`` drops the series of removed ones). Requests never
choose a label value: reports and polls for unknown Gateways are not counted, and proxy ids
are never labels. ``version`` is the one current version per Gateway.

Propagation is measured per proxy that was connected when the version was published and ran
another version; a proxy that connects later (fresh, or after an outage) is not counted,
since its delay is not propagation.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

PREFIX = "propylon_control_"
PROPAGATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TRANSLATION_RESULTS = ("success", "failure")
APPLY_RESULTS = ("applied", "unchanged", "dry_run", "invalid", "conflict")
REPORT_RESULTS = ("ACK", "NACK")
ANSWER_FORMS = ("delta", "full")
KEPT_WALLS = 16  # publication times remembered per Gateway (a stable version's among them)
ACTIVE_PHASES = ("Progressing", "Paused")


@dataclass
class _Published:
    version: str
    at: float  # time.monotonic()
    wall: float  # time.time()
    waiting: set[str] = field(default_factory=set)  # proxies yet to ACK it
    walls: dict[str, float] = field(default_factory=dict)  # recent versions -> time.time()


class ControlMetrics:
    """Counters fed by the state (publications) and the API (polls, reports, applies);
    gauges computed at scrape time from the fleet the API passes to ``render``."""

    def __init__(self, connected_for: float) -> None:
        self.connected_for = connected_for
        self.registry = CollectorRegistry()
        self._published: dict[str, _Published] = {}
        self._running: dict[tuple[str, str], tuple[str, float]] = {}  # -> version, seen
        self._scrape: tuple[Sequence[dict[str, Any]], bool] = ((), False)
        self.versions = Counter(PREFIX + "gateway_versions", "IR versions published.",
                                ["gateway"], registry=self.registry)
        self.reports = Counter(PREFIX + "proxy_reports", "ACK and NACK reports received.",
                               ["gateway", "result"], registry=self.registry)
        self.propagation = Histogram(
            PREFIX + "propagation_seconds", "From publishing a version to a proxy's ACK.",
            ["gateway"], buckets=PROPAGATION_BUCKETS, registry=self.registry)
        self.answers = Counter(PREFIX + "ir_answers", "IR polls answered, by form (delta "
                               "or full snapshot).", ["gateway", "form"],
                               registry=self.registry)
        self.translations = Counter(PREFIX + "translations", "Translations, by result.",
                                    ["result"], registry=self.registry)
        self.applies = Counter(PREFIX + "applies", "POST /v1/apply batches, by result.",
                               ["result"], registry=self.registry)
        for result in TRANSLATION_RESULTS:
            self.translations.labels(result)
        for result in APPLY_RESULTS:
            self.applies.labels(result)
        self.registry.register(_FleetCollector(self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    # -- fed by ControlState -----------------------------------------------------------------
    def published(self, gateway: str, version: str) -> None:
        now = time.monotonic()
        waiting = {proxy for (g, proxy), (running, seen) in self._running.items()
                   if g == gateway and running != version and now - seen < self.connected_for}
        wall = time.time()
        before = self._published.get(gateway)
        walls = {**(before.walls if before else {}), version: wall}
        self._published[gateway] = _Published(version, now, wall, waiting,
                                               dict(list(walls.items())[-KEPT_WALLS:]))
        self.versions.labels(gateway).inc()
        for result in REPORT_RESULTS:
            self.reports.labels(gateway, result)
        for form in ANSWER_FORMS:
            self.answers.labels(gateway, form)
        self.propagation.labels(gateway)

    def retain(self, gateways: Iterable[str]) -> None:
        """Forget the Gateways no longer configured, and their series."""
        keep = set(gateways)
        for gateway in set(self._published) - keep:
            del self._published[gateway]
            self.versions.remove(gateway)
            self.propagation.remove(gateway)
            for result in REPORT_RESULTS:
                self.reports.remove(gateway, result)
            for form in ANSWER_FORMS:
                self.answers.remove(gateway, form)
        self._running = {k: v for k, v in self._running.items() if k[0] in keep}

    def translated(self, ok: bool) -> None:
        self.translations.labels("success" if ok else "failure").inc()

    # -- fed by the API ----------------------------------------------------------------------
    def polled(self, gateway: str, proxy: str, version: str) -> None:
        if gateway in self._published:
            self._running[(gateway, proxy)] = (version, time.monotonic())

    def reported(self, gateway: str, proxy: str, version: str, result: str) -> None:
        published = self._published.get(gateway)
        if published is None or result not in REPORT_RESULTS:
            return
        self.reports.labels(gateway, result).inc()
        if result != "ACK":
            return
        now = time.monotonic()
        self._running[(gateway, proxy)] = (version, now)
        if version == published.version and proxy in published.waiting:
            published.waiting.discard(proxy)
            self.propagation.labels(gateway).observe(now - published.at)

    def answered(self, gateway: str, form: str) -> None:
        if gateway in self._published:
            self.answers.labels(gateway, form).inc()

    def applied(self, result: str) -> None:
        self.applies.labels(result).inc()

    # -- scraping ----------------------------------------------------------------------------
    def render(self, fleet: Sequence[dict[str, Any]], ready: bool,
               accept: str = "", names: Sequence[str] = ()) -> tuple[bytes, str]:
        """The exposition (OpenMetrics when ``accept`` asks for it) and its content type;
        ``fleet`` is ``ControlState.fleet()``'s answer. ``names``: only those metrics (the
        ``name[]`` parameters of Prometheus's own exposition servers; a histogram's
        ``_bucket``, ``_count`` and ``_sum`` series are named as such)."""
        encoder, content_type = choose_encoder(accept)
        self._scrape = (fleet, ready)
        try:
            if names:
                return encoder(self.registry.restricted_registry(names)), content_type
            return encoder(self.registry), content_type
        finally:
            self._scrape = ((), False)

    def gauges(self) -> Iterator[Metric]:
        fleet, ready = self._scrape
        info = GaugeMetricFamily(PREFIX + "gateway_version_info",
                                 "The IR version served, per Gateway.",
                                 labels=["gateway", "version"])
        stamp = GaugeMetricFamily(PREFIX + "gateway_published_timestamp_seconds",
                                  "When the served version was published.", labels=["gateway"])
        connected = GaugeMetricFamily(PREFIX + "proxies_connected",
                                      "Proxies that polled recently.", labels=["gateway"])
        current = GaugeMetricFamily(PREFIX + "proxies_current",
                                    "Connected proxies running the served version.",
                                    labels=["gateway"])
        counts = _fleet_counts(fleet)
        entries = {str(entry["gateway"]): entry for entry in fleet}
        for gateway, published in sorted(self._published.items()):
            entry = entries.get(gateway)
            version = (served_version(entry) if entry is not None else None) \
                or published.version
            info.add_metric([gateway, version], 1)
            stamp.add_metric([gateway], published.walls.get(version, published.wall))
            up, fresh = counts.get(gateway, (0, 0))
            connected.add_metric([gateway], up)
            current.add_metric([gateway], fresh)
        yield from (info, stamp, connected, current)
        yield GaugeMetricFamily(PREFIX + "ready", "1 once the store was read and translated.",
                                value=1 if ready else 0)


def served_version(entry: Mapping[str, Any], proxy: str | None = None) -> str | None:
    """The version the control plane serves a fleet (``ControlState.fleet`` entry) or one
    of its proxies: the translated version, unless a rollout says otherwise (the stable
    version while it is under way, rolled back or aborted; the candidate to the proxies
    given it while it is under way, and to all once it is Complete), as
    ``rollout.Rollout.target`` decides."""
    rollout = entry.get("rollout")
    if not rollout:
        version: str | None = entry.get("version")
        return version
    if rollout.get("phase") == "Complete" or (
            proxy is not None and rollout.get("phase") in ACTIVE_PHASES
            and proxy in rollout.get("given", ())):
        return str(rollout["candidate"])
    return str(rollout["stable"])


def _fleet_counts(fleet: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """gateway -> (proxies connected, of which running the version they are served)."""
    counts = {}
    for entry in fleet:
        up = [p for p in entry.get("proxies", []) if p.get("connected")]
        fresh = [p for p in up
                 if p.get("version") and p["version"] == served_version(entry, str(p["id"]))]
        counts[str(entry["gateway"])] = (len(up), len(fresh))
    return counts


class _FleetCollector:
    def __init__(self, metrics: ControlMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.gauges()

    def describe(self) -> list[Metric]:
        """Its families, by name (what a scrape asking for some names looks up)."""
        return list(self._metrics.gauges())
