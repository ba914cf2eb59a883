"""Tracing of proxied requests: W3C Trace Context continued, OpenTelemetry spans made.

Only Gateways with ``tracing`` pay anything: the runtime puts a ``TracingFilter``
(``trace_filter.py``) in front of their rules' filter chains, and nothing else looks for a
tracer on the request path. For each request of such a Gateway:
- ``begin``: the client's ``traceparent`` is read; an invalid one (or several) counts as
  absent, and its ``tracestate`` is dropped with it. The parent's sampled flag decides; a
  request without a parent starts a new trace, sampled with the Gateway's ratio;
- every upstream try (``start_try``, again on each retry) sends a ``traceparent`` with the same
  trace id, a new span id and the decided flags; ``tracestate`` passes unchanged;
- a sampled request becomes a SERVER span (stable HTTP semantic conventions) and a CLIENT span
  per upstream try; the SERVER span's status is ERROR for 5xx answers, for a policy's refusal
  (the policy named) and for a client that left; a CLIENT span's for a failed try or an answer
  of 400 and above.

Ids come from ``random.getrandbits`` and a trace is plain data while the request runs; spans
are built once, when they end, as the SDK's ``ReadableSpan`` records handed to the pipeline's
batch processor (``tracing_export.py``). The SDK's live ``Span`` objects (locks, attribute
checks on every set) cost several times more and nothing here needs them. An unsampled
request builds nothing: it costs a header parse, two random numbers and a header write.

The access log's ``trace_id`` is set for sampled and unsampled requests alike, so that log
lines of several tiers can be joined even when no span was kept.
"""

from __future__ import annotations

import random
import re
import time
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

if TYPE_CHECKING:
    from propylon.observability.tracing_export import SpanSink

TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"
_TRACEPARENT = re.compile(
    rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[\x21-\x7e]*)?")
_INVALID_TRACE, _INVALID_SPAN = b"0" * 32, b"0" * 16
_KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"))
_SAMPLED_FLAGS = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)
_getrandbits = random.getrandbits
_random = random.random
_time_ns = time.time_ns
_perf_counter = time.perf_counter

Headers = list[tuple[bytes, bytes]]
Parent = tuple[bytes, bytes, int]  # trace id hex, parent span id hex, flags


class TracedRequest(Protocol):
    """What tracing reads of a session (``proxy/session.py``)."""

    method: bytes
    path: bytes
    host: str
    host_value: bytes
    client_ip: str
    http11: bool
    start: float
    status: int
    request_headers: Headers
    request_id: bytes
    upstream_error: str
    route: Any
    proto: Any
    forwarder: Any
    trace: RequestTrace
    trace_id: str


def parse_traceparent(value: bytes) -> Parent | None:
    """(trace id hex, parent id hex, flags) of a valid ``traceparent``, else None. A version
    above 00 is read as 00 (W3C Trace Context §4.3: future versions only append fields)."""
    match = _TRACEPARENT.fullmatch(value.strip(b" \t"))
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == b"ff" or (version == b"00" and rest is not None):
        return None
    if trace_id == _INVALID_TRACE or parent_id == _INVALID_SPAN:
        return None
    return trace_id, parent_id, int(flags, 16)


def incoming_parent(headers: Headers) -> Parent | None:
    """The client's trace context, taken out of ``headers`` (the gateway sends its own
    ``traceparent`` upstream); when it is invalid its ``tracestate`` goes too."""
    found = [value for name, value in headers if name == TRACEPARENT]
    if not found:
        return None
    parent = parse_traceparent(found[0]) if len(found) == 1 else None
    dropped = (TRACEPARENT,) if parent is not None else (TRACEPARENT, TRACESTATE)
    headers[:] = [h for h in headers if h[0] not in dropped]
    return parent


def _set_traceparent(headers: Headers, value: bytes) -> None:
    for index in range(len(headers) - 1, -1, -1):
        if headers[index][0] == TRACEPARENT:
            headers[index] = (TRACEPARENT, value)
            return
    headers.append((TRACEPARENT, value))


def _host_port(host_value: bytes, default: int) -> int:
    _, colon, port = host_value.rpartition(b":")
    return int(port) if colon and port.isdigit() else default


class GatewayTracer:
    """One Gateway's tracing, compiled: where its spans go and its sampling ratio."""

    __slots__ = ("gateway", "ratio", "sink")

    def __init__(self, gateway: str, sink: SpanSink, ratio: float) -> None:
        self.gateway = gateway
        self.sink = sink
        self.ratio = ratio

    def begin(self, ctx: TracedRequest) -> RequestTrace:
        """The request's trace (set as ``ctx.trace``), continued or new."""
        parent = incoming_parent(ctx.request_headers)
        if parent is not None:
            sampled = bool(parent[2] & 1)
            trace_hex = parent[0]
        else:
            ratio = self.ratio
            sampled = ratio >= 1.0 or (ratio > 0.0 and _random() < ratio)
            trace_hex = b"%032x" % (_getrandbits(128) or 1)
        trace = ctx.trace = RequestTrace(trace_hex)
        ctx.trace_id = trace_hex.decode()
        if sampled:
            trace.server = ServerSpan(self, ctx, parent)
        return trace


class ClientTry:
    """The CLIENT span of one upstream try, until it ends."""

    __slots__ = ("attributes", "span_id", "start_ns")

    def __init__(self, span_id: int, attributes: dict[str, Any]) -> None:
        self.span_id = span_id
        self.start_ns = _time_ns()
        self.attributes = attributes


class ServerSpan:
    """A sampled request's SERVER span and the CLIENT spans of its tries."""

    __slots__ = ("attributes", "context", "current", "denial", "name", "parent", "start_ns",
                 "tracer")

    def __init__(self, tracer: GatewayTracer, ctx: TracedRequest, parent: Parent | None
                 ) -> None:
        self.tracer = tracer
        trace_id = int(ctx.trace.trace_hex, 16)
        state = None
        if parent is not None:
            states = [v.decode("latin-1") for n, v in ctx.request_headers if n == TRACESTATE]
            state = TraceState.from_header(states) if states else None
            self.parent: SpanContext | None = SpanContext(
                trace_id, int(parent[1], 16), True, TraceFlags(parent[2] & 0xFF), state)
        else:
            self.parent = None
        self.context = SpanContext(trace_id, _getrandbits(64) or 1, False, _SAMPLED_FLAGS,
                                   state)
        self.current: ClientTry | None = None
        self.denial: str | None = None
        # the span starts with the request head
        self.start_ns = _time_ns() - int((_perf_counter() - ctx.start) * 1e9)
        self.attributes = attributes = self._attributes(ctx)
        route = ctx.route
        if route is not None and route.rule_id:  # the not-found answer has no route
            http_route = f"{route.route_label}#{route.rule_label}"
            attributes["http.route"] = http_route
            attributes["propylon.route"] = route.route_label
            attributes["propylon.rule"] = route.rule_label
            self.name = f"{attributes['http.request.method']} {http_route}"
        else:
            self.name = attributes["http.request.method"]

    def _attributes(self, ctx: TracedRequest) -> dict[str, Any]:
        """The stable HTTP server attributes known when the request begins."""
        method = ctx.method.decode("latin-1")
        proto = ctx.proto
        listener = proto.listener
        attributes: dict[str, Any] = {
            "http.request.method": method if method in _KNOWN_METHODS else "_OTHER",
            "url.path": ctx.path.decode("latin-1"),
            "url.scheme": listener.scheme.decode("latin-1"),
            "server.address": ctx.host,
            "server.port": _host_port(ctx.host_value, listener.port),
            "client.address": ctx.client_ip,
            "network.peer.address": proto.peer_ip,
            "network.protocol.version": (
                "2" if hasattr(proto, "stream_id") else "1.1" if ctx.http11 else "1.0"),
            "propylon.gateway": self.tracer.gateway,
            "propylon.request_id": ctx.request_id.decode("latin-1"),
        }
        if method not in _KNOWN_METHODS:
            attributes["http.request.method_original"] = method
        for name, value in ctx.request_headers:
            if name == b"user-agent":
                attributes["user_agent.original"] = value.decode("latin-1")
                break
        return attributes

    def start_try(self, ctx: TracedRequest, resends: int) -> int:
        """A CLIENT span for a new try; its span id (the upstream's parent)."""
        attributes: dict[str, Any] = {"http.request.method": self.attributes[
            "http.request.method"]}
        forwarder = ctx.forwarder
        if forwarder is not None:
            attributes["propylon.upstream"] = forwarder.cluster.key
        if resends:
            attributes["http.request.resend_count"] = resends
        current = self.current = ClientTry(_getrandbits(64) or 1, attributes)
        return current.span_id

    def end_try(self, endpoint: str | None, status: int, error: str) -> None:
        current, self.current = self.current, None
        if current is None:
            return
        attributes = current.attributes
        if endpoint:
            address, _, port = endpoint.rpartition(":")
            attributes["server.address"] = address.strip("[]")
            if port.isdigit():
                attributes["server.port"] = int(port)
        span_status = _UNSET
        if error:
            attributes["error.type"] = error
            span_status = Status(StatusCode.ERROR, error)
        elif status:
            attributes["http.response.status_code"] = status
            if status >= 400:
                attributes["error.type"] = str(status)
                span_status = Status(StatusCode.ERROR)
        context = self.context
        sink = self.tracer.sink
        sink.emit(ReadableSpan(
            attributes["http.request.method"],
            SpanContext(context.trace_id, current.span_id, False, _SAMPLED_FLAGS,
                        context.trace_state),
            context, sink.resource, attributes, kind=SpanKind.CLIENT, status=span_status,
            start_time=current.start_ns, end_time=_time_ns(),
            instrumentation_scope=sink.scope))

    def end(self, status: int, error: str, abandoned: str) -> None:
        attributes = self.attributes
        if status:
            attributes["http.response.status_code"] = status
        span_status = _UNSET
        if abandoned:
            attributes["error.type"] = abandoned
            span_status = Status(StatusCode.ERROR, abandoned)
        elif self.denial is not None:
            span_status = Status(StatusCode.ERROR, self.denial)
        elif status >= 500:
            attributes["error.type"] = str(status)
            span_status = Status(StatusCode.ERROR, error or None)
        sink = self.tracer.sink
        sink.emit(ReadableSpan(
            self.name, self.context, self.parent, sink.resource, attributes,
            kind=SpanKind.SERVER, status=span_status, start_time=self.start_ns,
            end_time=_time_ns(), instrumentation_scope=sink.scope))


class RequestTrace:
    """One request's trace: its id, and its spans when it is sampled (``server``)."""

    __slots__ = ("ended", "server", "trace_hex", "tries")

    def __init__(self, trace_hex: bytes) -> None:
        self.trace_hex = trace_hex
        self.server: ServerSpan | None = None  # None: not sampled
        self.tries = 0
        self.ended = False

    def start_try(self, ctx: TracedRequest) -> None:
        """An upstream try begins: the ``traceparent`` it sends (and its CLIENT span)."""
        server = self.server
        if server is None:
            value = b"00-%s-%016x-00" % (self.trace_hex, _getrandbits(64) or 1)
        else:
            value = b"00-%s-%016x-01" % (self.trace_hex, server.start_try(ctx, self.tries))
        self.tries += 1
        _set_traceparent(ctx.request_headers, value)

    def retry(self, ctx: TracedRequest, endpoint: str | None, condition: str,
              status: int) -> None:
        """The try just made failed and another follows: ``condition`` is a retry condition
        of ``runtime/retry.py`` (``status``: the answer's status; ``grpc``: its grpc-status)."""
        server = self.server
        if server is not None:
            if condition == "status":
                server.end_try(endpoint, status, "")
            else:
                server.end_try(endpoint, 0, f"{condition} {status}" if status else condition)
        self.start_try(ctx)

    def denied(self, policy_type: str, source: str) -> None:
        """A policy answered instead of the upstream (a refusal)."""
        server = self.server
        if server is not None:
            server.denial = f"denied by the {policy_type} policy of {source}"
            server.attributes["propylon.policy.type"] = policy_type
            server.attributes["propylon.policy.source"] = source

    def finish(self, ctx: TracedRequest, abandoned: str = "") -> None:
        """The exchange is over: the last try's span and the SERVER span end. ``abandoned``:
        why the exchange ended without an answer (the client went away)."""
        if self.ended:
            return
        self.ended = True
        server = self.server
        if server is None:
            return
        error = abandoned or ctx.upstream_error
        if server.current is not None:
            forwarder = ctx.forwarder
            server.end_try(forwarder.endpoint_label if forwarder is not None else None,
                           0 if error else ctx.status, error)
        server.end(ctx.status, ctx.upstream_error, abandoned)
