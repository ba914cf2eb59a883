"""The tracing hooks of a Gateway with ``tracing``: a filter at the head of every rule's chain.

It is not a policy type (no row in the policy table, nothing to attach): ``compile_gateway``
puts one instance, built from the Gateway's ``TracingIR``, first in each chain of a traced
Gateway, and in no chain otherwise, so an untraced Gateway runs no tracing code at all.
First in the chain: ``on_request`` sees the request before any policy can refuse it, and
``on_response`` (reverse order) sees the final answer. The session and the forwarder call the
request's ``RequestTrace`` directly for the rare events no phase marks: a policy's refusal,
a retry, a client that went away.
"""

from __future__ import annotations

from typing import Any, cast

from propylon.filters.base import Filter, FilterContext
from propylon.observability.tracing import GatewayTracer, TracedRequest
from propylon.observability.tracing_export import SpanSink


class TracingFilter(Filter):
    """Phases: ``on_request`` begins the trace, ``on_upstream_request`` starts the first
    upstream try, ``on_log`` ends the spans."""

    policy_type = "tracing"

    __slots__ = ("tracer",)

    def __init__(self, gateway: str, sink: SpanSink, ratio: float) -> None:
        super().__init__(f"Gateway {gateway}")
        self.tracer = GatewayTracer(gateway, sink, ratio)

    @classmethod
    def from_spec(cls, settings: Any, source: str, env: Any) -> Filter:
        raise TypeError("tracing is a Gateway setting, built by the runtime")

    def on_request(self, ctx: FilterContext) -> None:
        self.tracer.begin(cast(TracedRequest, ctx))

    def on_upstream_request(self, ctx: FilterContext) -> None:
        traced = cast(TracedRequest, ctx)
        traced.trace.start_try(traced)

    def on_log(self, ctx: FilterContext) -> None:
        traced = cast(TracedRequest, ctx)
        trace = getattr(traced, "trace", None)  # unset when the request ended before routing
        if trace is not None:
            trace.finish(traced)
