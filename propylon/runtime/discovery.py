"""Endpoint sets from DNS answers: which queries an Upstream needs, and its endpoints once
they are answered.

Invariants:
- Pure data, no I/O: the queries are answered elsewhere, once per proxy (the supervisor's
  ``proxy/resolver.py``), and the answers are handed to every worker and to the active health
  checker, which expand the same IR with the same answers into the same endpoints.
- A group is ``endpoints`` (priority 0) or one of ``failover`` (1, 2, ...). A group with
  ``dns`` turns each host name into one endpoint per address of its answer (the entry's port
  and weight, as Envoy's STRICT_DNS), and its ``srv`` name into one endpoint per target
  address (the record's port and weight); IP addresses stay as they are. A group without
  ``dns`` is its endpoints as written (a name there is resolved by the OS at each connect).
- A name not answered yet contributes no endpoint. Endpoints of one group with the same
  address and port are one endpoint whose weight is the sum.
- Each endpoint keeps the name it came from (``GroupEndpoint.name``): TLS to it is verified
  against that name (its SNI), not against the address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from propylon.ir import DnsIR, EndpointIR, UpstreamIR


@dataclass(frozen=True, slots=True)
class DnsQuery:
    """One name to keep resolved; equal queries of several Upstreams are asked once."""

    name: str  # a host name, or an SRV name when ``srv``
    srv: bool
    family: str  # auto | v4 | v6
    resolvers: tuple[str, ...]  # "ip:port"; empty: the system's
    refresh: float


@dataclass(frozen=True, slots=True)
class Record:
    """One address of an answer; ``port`` and ``weight`` are an SRV record's (0 for A/AAAA),
    ``target`` the SRV target's name (the queried name for A/AAAA)."""

    address: str
    port: int = 0
    weight: int = 0
    target: str = ""


Answer = tuple[Record, ...]
Answers = Mapping[DnsQuery, Answer]


@dataclass(frozen=True, slots=True)
class GroupEndpoint:
    endpoint: EndpointIR
    name: str | None = None  # the host name it was resolved from


def groups(upstream: UpstreamIR) -> list[tuple[tuple[EndpointIR, ...], DnsIR | None]]:
    """(endpoints, dns) of each priority group, 0 first."""
    return [(upstream.endpoints, upstream.dns),
            *((g.endpoints, g.dns) for g in upstream.failover)]


def queries(upstream: UpstreamIR) -> frozenset[DnsQuery]:
    """Every query the Upstream's endpoints need (none without ``dns``)."""
    return frozenset(q for endpoints, dns in groups(upstream)
                     for q in _group_queries(endpoints, dns))


def _group_queries(endpoints: tuple[EndpointIR, ...], dns: DnsIR | None
                   ) -> Iterator[DnsQuery]:
    if dns is None:
        return
    if dns.srv is not None:
        yield _query(dns.srv, True, dns)
        return
    for endpoint in endpoints:
        if not is_ip(endpoint.address):
            yield _query(endpoint.address, False, dns)


def _query(name: str, srv: bool, dns: DnsIR) -> DnsQuery:
    return DnsQuery(name.lower().rstrip("."), srv, dns.family, dns.resolvers, dns.refresh)


def is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def endpoint_groups(upstream: UpstreamIR, answers: Answers) -> list[list[GroupEndpoint]]:
    """The endpoints of each priority group, given the answers known now."""
    return [_expand(endpoints, dns, answers) for endpoints, dns in groups(upstream)]


def _expand(endpoints: tuple[EndpointIR, ...], dns: DnsIR | None, answers: Answers
            ) -> list[GroupEndpoint]:
    if dns is None:
        return [GroupEndpoint(e) for e in endpoints]
    found: dict[tuple[str, int], tuple[int, str | None]] = {}  # insertion order kept

    def add(address: str, port: int, weight: int, name: str | None) -> None:
        old_weight, old_name = found.get((address, port), (0, name))
        found[(address, port)] = (old_weight + weight, old_name)

    if dns.srv is not None:
        for record in answers.get(_query(dns.srv, True, dns), ()):
            add(record.address, record.port, record.weight, record.target or None)
    for endpoint in endpoints:
        if is_ip(endpoint.address):
            add(endpoint.address, endpoint.port, endpoint.weight, None)
            continue
        for record in answers.get(_query(endpoint.address, False, dns), ()):
            add(record.address, endpoint.port, endpoint.weight, endpoint.address)
    return [GroupEndpoint(EndpointIR(address, port, weight), name)
            for (address, port), (weight, name) in found.items()]


def all_endpoints(upstream: UpstreamIR, answers: Answers) -> list[GroupEndpoint]:
    """Every group's endpoints, in priority order (what active health checks probe)."""
    return [e for group in endpoint_groups(upstream, answers) for e in group]
