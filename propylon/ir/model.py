"""The intermediate representation: what translation produces and what a proxy compiles.

Invariants:
- Plain, frozen data. No behaviour, no compiled regexes, no sockets. Everything here round-trips
  through JSON (see ``codec.py``) so the control plane can ship it and a proxy can cache it.
- Every reference is resolved: a rule names upstreams by key (``namespace/name``) and every key
  it names is present in its Gateway's ``upstreams``. Delegation is already flattened: a
  RouteTable's rules appear as ordinary rules carrying their inherited hostnames.
- A rule's ``policies`` are its own (schema 4): precedence and ``enforced`` are applied, and
  the Gateway-level winners are left to its Gateway's ``default_policies``, which apply to
  every rule for the types it has none of (``effective_policies``: a change of the Gateway's
  policies changes no rule). Both are sorted in the order of the policy type table
  (``propylon/policies/table.py``). The runtime builds one filter per effective policy of
  each rule and runs them in that order.
- Invalid routes are already replaced: their matches carry a ``DirectResponseIR`` with the
  Gateway's ``invalid_route_response`` and ``replaced=True``.
- Durations are float seconds. Header names are lower-case.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from propylon.ir.frozen import quicker_init

IR_SCHEMA_VERSION = 4  # propylon/ir/schema.py: what each schema adds, and the steps


@dataclass(frozen=True, slots=True)
class EndpointIR:
    address: str
    port: int
    weight: int = 1


@dataclass(frozen=True, slots=True)
class DnsIR:
    """Resolve host names (A/AAAA) or an SRV name, re-resolved at the records' TTL or
    ``refresh`` seconds, whichever is shorter (never under 1s), off the request path."""

    refresh: float = 30.0
    resolvers: tuple[str, ...] = ()  # "ip:port" / "[ip6]:port"; empty: the system's
    family: str = "auto"  # auto | v4 | v6
    srv: str | None = None  # "_service._proto.name": the endpoints, ports and weights


@dataclass(frozen=True, slots=True)
class EndpointGroupIR:
    """A failover group (priority 1, 2, ...); ``dns`` already holds what it inherits."""

    endpoints: tuple[EndpointIR, ...] = ()
    dns: DnsIR | None = None


@dataclass(frozen=True, slots=True)
class HashOnIR:
    """What ``ring_hash`` hashes: ``kind`` is ``header``, ``cookie`` or ``client_ip``."""

    kind: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class UpstreamTLSIR:
    """TLS to the endpoints; paths are absolute. ``ca_file`` None means the system CAs."""

    sni: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True, slots=True)
class ActiveHealthIR:
    """Probes run once per proxy (in its supervisor); workers receive the verdicts."""

    type: str = "http"  # http | tcp | grpc
    path: str = "/healthz"
    service: str = ""  # grpc checks: the service asked about (left out of the JSON while "")
    host: str | None = None  # Host of http probes; the endpoint address when None
    expected_statuses: tuple[int, ...] = (200,)
    interval: float = 5.0
    interval_jitter: float = 0.5
    timeout: float = 1.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3


@dataclass(frozen=True, slots=True)
class PassiveHealthIR:
    consecutive_errors: int = 5
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 50.0


@dataclass(frozen=True, slots=True)
class CircuitBreakerIR:
    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024


@dataclass(frozen=True, slots=True)
class UpstreamIR:
    key: str  # "namespace/name"
    endpoints: tuple[EndpointIR, ...]
    lb_policy: str = "round_robin"  # round_robin | least_request | random | ring_hash
    hash_on: HashOnIR | None = None
    connect_timeout: float = 5.0
    idle_timeout: float = 60.0  # idle pooled connections are closed after this
    max_connections_per_endpoint: int = 1024
    max_idle_per_endpoint: int = 128
    tls: UpstreamTLSIR | None = None
    panic_threshold: float = 50.0  # percent of usable endpoints below which all are used
    active_health: ActiveHealthIR | None = None
    passive_health: PassiveHealthIR | None = None
    circuit_breaker: CircuitBreakerIR | None = None
    # 1 or 2: a PROXY header on each new connection (0: none); left out of the JSON form at 0
    proxy_protocol_version: int = 0
    # HTTP1 | HTTP2 (h2 with ALPN over TLS, h2c in clear); left out of the JSON form at HTTP1
    protocol: str = "HTTP1"
    # discovery of ``endpoints`` and failover groups; the three left out of the JSON form while
    # they hold their defaults
    dns: DnsIR | None = None
    failover: tuple[EndpointGroupIR, ...] = ()
    failover_threshold: float = 70.0  # percent of healthy endpoints a group needs to be whole


@dataclass(frozen=True, slots=True)
class PathMatchIR:
    kind: str  # exact | prefix | regex
    value: str


@dataclass(frozen=True, slots=True)
class ValueMatchIR:
    """A header or query-parameter condition: exact ``value`` or full-match ``regex``."""

    name: str  # header names lower-case; query names as given
    value: str | None = None
    regex: str | None = None


@dataclass(frozen=True, slots=True)
class MatchIR:
    path: PathMatchIR = field(default_factory=lambda: PathMatchIR("prefix", "/"))
    method: str | None = None
    headers: tuple[ValueMatchIR, ...] = ()
    query: tuple[ValueMatchIR, ...] = ()


@dataclass(frozen=True, slots=True)
class BackendIR:
    upstream: str  # key into GatewayIR.upstreams
    weight: int = 1


@dataclass(frozen=True, slots=True)
class RewriteIR:
    """Exactly one of ``prefix`` (replaces the matched prefix) or ``full_path`` is set."""

    prefix: str | None = None
    full_path: str | None = None


@dataclass(frozen=True, slots=True)
class RetryIR:
    attempts: int = 1  # retries after the first try
    on: tuple[str, ...] = ("connect-failure", "reset")
    statuses: tuple[int, ...] = ()
    per_try_timeout: float | None = None
    backoff_base: float = 0.025
    backoff_max: float = 0.25
    budget_percent: float = 20.0
    budget_min_concurrency: int = 3


@dataclass(frozen=True, slots=True)
class MirrorIR:
    upstream: str  # key into GatewayIR.upstreams
    percent: float = 100.0


@dataclass(frozen=True, slots=True)
class ForwardIR:
    backends: tuple[BackendIR, ...]
    rewrite: RewriteIR | None = None
    timeout: float = 60.0  # whole exchange, request head to response end; 0 disables
    retries: RetryIR | None = None
    mirror: MirrorIR | None = None
    # the weight of unresolved backends, beside ``backends``': that share answers 500
    unresolved_weight: int = 0


@dataclass(frozen=True, slots=True)
class RedirectIR:
    status_code: int = 302
    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    path: str | None = None
    prefix: str | None = None  # replaces the matched path prefix (left out of JSON while None)


@dataclass(frozen=True, slots=True)
class DirectResponseIR:
    status: int
    body: str = ""
    content_type: str = "text/plain; charset=utf-8"


Action = ForwardIR | RedirectIR | DirectResponseIR


@dataclass(frozen=True, slots=True)
class PolicyIR:
    type: str  # a policy type of the table (propylon/policies/table.py)
    # The policy section as plain JSON data, defaults filled in: the settings model's JSON
    # form, which the runtime validates again to build the filter (secrets already read).
    spec: dict[str, Any]
    source: str  # where it was attached, e.g. "Gateway infra/edge (enforced)"


@dataclass(frozen=True, slots=True)
class RuleIR:
    """One routing rule, flattened. ``matches`` are OR'ed; an empty tuple never matches."""

    id: str  # unique within the Gateway, stable across reloads
    route: str  # "Kind namespace/name" of the Route or RouteTable that owns the rule
    name: str | None  # the rule's own name, if it has one
    hostnames: tuple[str, ...]  # exact or "*.suffix"; empty means any host
    matches: tuple[MatchIR, ...]
    action: Action
    policies: tuple[PolicyIR, ...] = ()
    delegated_from: tuple[str, ...] = ()  # ids of the delegating rules, outermost first
    replaced: bool = False  # True when this rule stands in for an invalid resource
    # the listener sections it is served on (``ListenerIR.sections`` names; a listener
    # without sections is one, of its own name); empty: every listener. Translation gives
    # rules sections only on a Gateway whose listeners have them, where they are honoured.
    # Left out of the JSON form while empty.
    sections: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ListenerLimitsIR:
    max_request_line_bytes: int = 8192  # 414 beyond
    max_header_bytes: int = 61440  # 431 beyond
    max_header_count: int = 100  # 431 beyond
    reject_underscore_headers: bool = True  # 400 for header names with "_"
    header_read_timeout: float = 10.0  # 408 when a request head takes longer
    keep_alive_timeout: float = 60.0  # idle client connections are closed after this
    stream_idle_timeout: float = 300.0  # an exchange with no bytes moving is cut after this
    max_connections: int = 10000  # accepting pauses at this many open connections


@dataclass(frozen=True, slots=True)
class PathNormalizationIR:
    """How a listener normalises request paths before routing (proxy/path.py)."""

    enabled: bool = True  # False: the raw path is routed and forwarded (fragments still 400)
    merge_slashes: bool = True
    escaped_slashes: str = "reject"  # reject | keep | unescape (%2F, %5C and a raw "\")
    path_parameters: str = "keep"  # keep | strip | reject (";" parameters of segments)


@dataclass(frozen=True, slots=True)
class ProxyProtocolIR:
    """Whether a listener reads the PROXY protocol before HTTP (proxy/proxy_protocol.py)."""

    mode: str = "off"  # off | optional | required
    versions: tuple[int, ...] = (1, 2)
    trusted_sources: tuple[str, ...] = ()  # CIDRs allowed to send a header


@dataclass(frozen=True, slots=True)
class CertificateIR:
    """A listener certificate: files named by absolute path, or the PEM itself.

    Files are read (and re-read on change) by workers. A certificate from a Kubernetes
    ``kubernetes.io/tls`` Secret comes inline instead (``cert_file``/``key_file`` empty), so
    a control plane never names files of its own machine: it ships the PEM in the shard of
    the Gateway that serves it only, and each worker writes it to private files to load it
    (``proxy/pem_files.py``). The three inline fields are left out of the JSON while empty;
    ``private_key`` is redacted wherever an IR is shown (``admin/redact.py``).
    """

    cert_file: str
    key_file: str
    certificate_pem: str = ""  # the chain, leaf first
    private_key: str = ""  # PEM
    source: str = ""  # where inline PEM came from ("Secret ns/name"), for logs and metrics


@dataclass(frozen=True, slots=True)
class ListenerTLSIR:
    """HTTPS: the first certificate is the default, others are chosen by SNI."""

    certificates: tuple[CertificateIR, ...]
    client_ca_file: str | None = None
    client_auth: str = "none"  # none | optional | required


@dataclass(frozen=True, slots=True)
class ListenerSectionIR:
    """One of the listeners a listener of a port stands for (a Gateway API listener, whose
    name a route's ``parentRefs[].sectionName`` gives). A request belongs to the section
    whose hostname fits its host best (the same name, then the longest ``*.suffix``, then
    the section without hostname; none: no rule answers it), and only the rules served on
    that section (``RuleIR.sections``) answer it: the Gateway API's listener isolation."""

    name: str
    hostname: str | None = None  # exact or "*.suffix"; None: any host


@dataclass(frozen=True, slots=True)
class ListenerIR:
    name: str
    port: int
    protocol: str = "HTTP"
    address: str = "0.0.0.0"
    hostnames: tuple[str, ...] = ()
    limits: ListenerLimitsIR = ListenerLimitsIR()
    tls: ListenerTLSIR | None = None
    # Left out of the JSON form while it has its defaults (see codec).
    path_normalization: PathNormalizationIR = PathNormalizationIR()
    proxy_protocol: ProxyProtocolIR = ProxyProtocolIR()  # also left out while default
    http2: bool = True  # also left out while default
    # also left out while empty: the listener is then one section, of its own name
    sections: tuple[ListenerSectionIR, ...] = ()


@dataclass(frozen=True, slots=True)
class TracingIR:
    """``Gateway.spec.tracing`` as written: None fields are resolved by each proxy from its
    own ``OTEL_*`` environment (observability/tracing.py), since that is where spans leave."""

    otlp_endpoint: str | None = None
    sampling: float | None = None
    service_name: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayIR:
    key: str  # "namespace/name"
    listeners: tuple[ListenerIR, ...]
    rules: tuple[RuleIR, ...]
    upstreams: tuple[UpstreamIR, ...]
    trusted_proxies: tuple[str, ...] = ()  # CIDRs
    invalid_route_response: DirectResponseIR = DirectResponseIR(500, "route unavailable")
    # Gateway-level policies: those of every rule for the types it has none of
    # (``effective_policies``), and of requests that match no rule (e.g. 404 answers).
    default_policies: tuple[PolicyIR, ...] = ()
    tracing: TracingIR | None = None  # None: no tracing, no per-request cost (left out of JSON)


def effective_policies(
    defaults: tuple[PolicyIR, ...], own: tuple[PolicyIR, ...], rank: Callable[[str], int]
) -> tuple[PolicyIR, ...]:
    """What a rule applies: its ``own`` policies and its Gateway's ``defaults`` of the types
    it has none of, sorted by ``rank`` (the reader's policy type table: plugins may rank
    differently there than where the IR was made)."""
    if not defaults:
        return own
    types = {policy.type for policy in own}
    merged = [*own, *(policy for policy in defaults if policy.type not in types)]
    return tuple(sorted(merged, key=lambda policy: rank(policy.type)))


@dataclass(frozen=True, slots=True)
class StatusIR:
    kind: str
    key: str  # "namespace/name"
    state: str  # Accepted | Invalid
    reasons: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()  # Gateways that selected the resource


@dataclass(frozen=True, slots=True)
class BasicUserIR:
    """A basic-auth user: PBKDF2-HMAC-SHA256 of the password (never the password itself)."""

    username: str
    salt: str  # hex
    hash: str  # hex
    iterations: int


@dataclass(frozen=True, slots=True)
class ConsumerIR:
    """An API client. Secrets were read from their ``secretRef`` at translation and only their
    hashes are kept: ``api_keys`` are SHA-256 hex digests of the keys."""

    key: str  # "namespace/name"
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    api_keys: tuple[str, ...] = ()
    basic_auth: tuple[BasicUserIR, ...] = ()


@dataclass(frozen=True, slots=True)
class SnapshotIR:
    gateways: tuple[GatewayIR, ...]
    statuses: tuple[StatusIR, ...] = ()
    # Valid Consumers, by key. Omitted from the JSON form when empty (see codec), so versions
    # of configurations without consumers are unchanged.
    consumers: tuple[ConsumerIR, ...] = ()
    version: str = ""  # content hash, filled in by codec.seal()
    schema: int = IR_SCHEMA_VERSION


for _class in [value for value in list(globals().values())
               if isinstance(value, type) and dataclasses.is_dataclass(value)
               and value.__module__ == __name__]:
    quicker_init(_class)
del _class
