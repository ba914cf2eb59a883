"""DNS discovery, run once per proxy (in the supervisor, beside the active health checks).

Each name the served Upstreams need (``runtime/discovery.DnsQuery``) gets a resolver loop:
A and/or AAAA records (``family``), or SRV records and their targets' addresses, asked of the
query's resolvers (the system's when none) with dnspython. The next query waits the answer's
TTL or ``refresh``, whichever is shorter, and never under ``MIN_INTERVAL``.

Invariants:
- Off the request path: workers receive the answers (``on_change``, the supervisor sends
  them) and rebuild the affected clusters; a request never waits for DNS.
- A failed resolution (timeout, SERVFAIL, NXDOMAIN, no records) keeps the last answer, is
  counted (``/metrics``) and logged once when a name starts failing and once when it
  resolves again, never once per attempt.
- ``answers`` holds the last good answer of every name asked for; ``update`` starts the
  loops of new names and waits (at most ``FIRST_ANSWER_WAIT``) for their first attempt, so a
  configuration is installed with its addresses known when DNS answers in time.
- SRV: the records of the lowest priority value are used (RFC 2782); a weight of 0 counts
  as 1. A target's addresses come from the answer's additional section when it has them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from propylon import ir
from propylon.runtime.discovery import Answer, DnsQuery, Record, queries

log = logging.getLogger("propylon.dns")

MIN_INTERVAL = 1.0  # seconds between two queries of a name, whatever its TTL
QUERY_TIMEOUT = 2.0  # one resolution, all its resolvers and retries included
FIRST_ANSWER_WAIT = 3.0  # how long an install waits for new names' first answers


class ResolutionError(Exception):
    """A name gave no usable records."""


@dataclass
class NameStats:
    successes: int = 0
    failures: int = 0
    failing: bool = False
    last_error: str = ""


class Resolver:
    def __init__(self, on_change: Callable[[DnsQuery, Answer], None]) -> None:
        self.on_change = on_change
        self.answers: dict[DnsQuery, Answer] = {}
        self.stats: dict[DnsQuery, NameStats] = {}
        self._loops: dict[DnsQuery, asyncio.Task[None]] = {}

    async def update(self, snapshot: ir.SnapshotIR) -> None:
        """Start resolving the names ``snapshot`` needs; wait for their first attempts."""
        started = []
        for query in needed(snapshot):
            if query not in self._loops:
                first = asyncio.Event()
                self.stats.setdefault(query, NameStats())
                self._loops[query] = asyncio.ensure_future(self._loop(query, first))
                started.append(first.wait())
        if started:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*started), FIRST_ANSWER_WAIT)

    def retain(self, snapshots: Iterable[ir.SnapshotIR | None]) -> None:
        """Stop resolving names none of ``snapshots`` needs."""
        keep = {q for s in snapshots if s is not None for q in needed(s)}
        for query in [q for q in self._loops if q not in keep]:
            self._loops.pop(query).cancel()
            self.answers.pop(query, None)
            self.stats.pop(query, None)

    def stop(self) -> None:
        for task in self._loops.values():
            task.cancel()
        self._loops.clear()

    async def _loop(self, query: DnsQuery, first: asyncio.Event) -> None:
        resolver = make_resolver(query.resolvers)
        stats = self.stats[query]
        delay = query.refresh
        while True:
            try:
                answer, ttl = await resolve(resolver, query)
            except (ResolutionError, dns.exception.DNSException, OSError) as exc:
                self._failed(query, stats, exc)
            else:
                stats.successes += 1
                if stats.failing:
                    stats.failing = False
                    log.warning("dns %s resolves again", _label(query))
                delay = max(MIN_INTERVAL, min(query.refresh, ttl))
                if answer != self.answers.get(query):
                    self.answers[query] = answer
                    log.info("dns %s: %s", _label(query),
                             ", ".join(_record_text(r, query) for r in answer))
                    self.on_change(query, answer)
            first.set()
            await asyncio.sleep(delay)

    def _failed(self, query: DnsQuery, stats: NameStats, exc: BaseException) -> None:
        stats.failures += 1
        stats.last_error = str(exc) or type(exc).__name__
        if not stats.failing:
            stats.failing = True
            kept = len(self.answers.get(query, ()))
            log.warning("dns %s failed (%s); keeping the last %d address(es) until it "
                        "resolves again", _label(query), stats.last_error, kept)


def needed(snapshot: ir.SnapshotIR) -> set[DnsQuery]:
    return {q for gateway in snapshot.gateways for upstream in gateway.upstreams
            for q in queries(upstream)}


def make_resolver(resolvers: tuple[str, ...]) -> dns.asyncresolver.Resolver:
    """A resolver asking ``resolvers`` ("ip:port"), or the system's (resolv.conf)."""
    resolver = dns.asyncresolver.Resolver(configure=not resolvers)
    if resolvers:
        servers: list[str | dns.nameserver.Nameserver] = []
        for server in resolvers:
            host, _, port = server.rpartition(":")
            servers.append(dns.nameserver.Do53Nameserver(host.strip("[]"), int(port)))
        resolver.nameservers = servers
    resolver.lifetime = QUERY_TIMEOUT
    resolver.cache = None  # the TTL is honoured by asking again, not by a cache
    return resolver


async def resolve(resolver: dns.asyncresolver.Resolver, query: DnsQuery
                  ) -> tuple[Answer, float]:
    """(records, smallest TTL) of ``query``; raises when it gives no address."""
    if query.srv:
        return await _resolve_srv(resolver, query)
    addresses, ttl = await _addresses(resolver, query.name, query.family)
    return tuple(Record(a, target=query.name) for a in addresses), ttl


_TYPES = {"auto": ("A", "AAAA"), "v4": ("A",), "v6": ("AAAA",)}


async def _addresses(resolver: dns.asyncresolver.Resolver, name: str, family: str
                     ) -> tuple[list[str], float]:
    answers = await asyncio.gather(
        *(resolver.resolve(name, rdtype, search=False) for rdtype in _TYPES[family]),
        return_exceptions=True)
    addresses: list[str] = []
    ttls: list[float] = []
    errors: list[BaseException] = []
    for answer in answers:
        if isinstance(answer, dns.resolver.NoAnswer):
            continue  # the name exists, without records of this family
        if isinstance(answer, BaseException):
            errors.append(answer)
            continue
        assert answer.rrset is not None
        addresses.extend(sorted(r.address for r in answer.rrset))
        ttls.append(answer.rrset.ttl)
    if not addresses:
        if errors:
            raise errors[0]
        raise ResolutionError(f"no {'/'.join(_TYPES[family])} records")
    return addresses, float(min(ttls))


async def _resolve_srv(resolver: dns.asyncresolver.Resolver, query: DnsQuery
                       ) -> tuple[Answer, float]:
    answer = await resolver.resolve(query.name, "SRV", search=False)
    assert answer.rrset is not None
    records = list(answer.rrset)
    best = min(r.priority for r in records)
    ttl = float(answer.rrset.ttl)
    glue = _glue(answer, query.family)
    found: list[Record] = []
    for record in sorted((r for r in records if r.priority == best),
                         key=lambda r: (r.target.to_text(), r.port)):
        target = record.target.to_text(omit_final_dot=True).lower()
        addresses = glue.get(target)
        if addresses is None:
            try:
                addresses, target_ttl = await _addresses(resolver, target, query.family)
            except (ResolutionError, dns.exception.DNSException):
                continue  # one unresolvable target: the others still serve
            ttl = min(ttl, target_ttl)
        found.extend(Record(a, record.port, max(1, record.weight), target) for a in addresses)
    if not found:
        raise ResolutionError("no SRV target has an address")
    return tuple(found), ttl


def _glue(answer: dns.resolver.Answer, family: str) -> dict[str, list[str]]:
    """Addresses of SRV targets given in the additional section."""
    wanted = {dns.rdatatype.from_text(t) for t in _TYPES[family]}
    glue: dict[str, list[str]] = {}
    for rrset in answer.response.additional:
        if rrset.rdtype in wanted:
            name = rrset.name.to_text(omit_final_dot=True).lower()
            glue.setdefault(name, []).extend(sorted(r.address for r in rrset))
    return glue


def _label(query: DnsQuery) -> str:
    return f"{'SRV ' if query.srv else ''}{query.name}"


def _record_text(record: Record, query: DnsQuery) -> str:
    if not query.srv:
        return record.address
    return f"{record.target}={record.address}:{record.port} weight {record.weight}"


def dns_families(resolver: Resolver | None) -> list[Metric]:
    """``/metrics``: resolutions by name and result, and the addresses each name has."""
    resolutions = CounterMetricFamily(
        "propylon_upstream_dns_resolutions", "DNS resolutions of Upstream endpoint names, by "
        "result (failure: the last addresses kept).", labels=["host", "type", "result"])
    addresses = GaugeMetricFamily(
        "propylon_upstream_dns_addresses", "Addresses an Upstream endpoint name resolves to "
        "now (the last good answer).", labels=["host", "type"])
    # queries of one name and type asked of other resolvers are summed under one label set
    totals: dict[tuple[str, str], list[int]] = {}
    for query, stats in (resolver.stats.items() if resolver is not None else ()):
        assert resolver is not None
        total = totals.setdefault((query.name, "SRV" if query.srv else query.family), [0] * 3)
        total[0] += stats.successes
        total[1] += stats.failures
        total[2] += len(resolver.answers.get(query, ()))
    for (name, kind), (successes, failures, count) in sorted(totals.items()):
        resolutions.add_metric([name, kind, "success"], successes)
        resolutions.add_metric([name, kind, "failure"], failures)
        addresses.add_metric([name, kind], count)
    return [resolutions, addresses]
