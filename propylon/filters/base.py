"""The filter contract: one base class whose phase methods do nothing by default.

A filter is built once per rule from its typed settings (``from_spec``, given a validated
instance of its class's ``settings_model``: defaults live in the model, not in the filter),
precomputes everything there, and never mutates its configuration at request time
(per-request data goes in ``ctx.state``; long-lived shared objects come from
``FilterEnv.shared``). The runtime puts a filter's bound method into a phase tuple only
when the filter's class overrides that phase, so a route with no filters, or a filter that
only edits responses, pays nothing for the other phases.

Phases, in the order they run for one request (after routing). The HTTP version is the
codec's business: the same phases run for HTTP/1.1 and HTTP/2 requests.
- ``on_request(ctx)``: the request head is parsed and a rule matched. Return ``None`` to go
  on, or a ``LocalResponse`` to answer the client directly (401, 403, 429, 204 preflight...);
  the remaining filters' ``on_request`` and the upstream are then skipped, but every filter's
  ``on_response`` still runs on the local answer. A filter that must wait (an external auth
  call, a Redis round trip) returns an awaitable of the same answer instead: the chain is
  suspended until it resolves (and cancelled if the client goes away); filters that answer
  synchronously never pay for a task. An exception becomes a 500 and is logged.
- ``on_request_body(ctx, chunk, end_stream)``: each piece of the request body, in order,
  before it goes upstream; ``end_stream`` is true for the last one (whose ``chunk`` may be
  empty). Return ``None`` to pass the chunk on unchanged, bytes to send instead of it (``b""``
  holds it back), or a ``LocalResponse`` to stop the request (413, 403 ...): the upstream side
  is dropped and the client gets that answer (if no response has started) with the
  connection closed. A filter with ``request_body_buffer > 0`` needs the whole body before the
  upstream is contacted: the session collects it (413 above that many bytes) and calls this
  phase once, with the whole body and ``end_stream`` true, before ``on_upstream_request``.
- ``on_upstream_request(ctx)``: once, before the request head is sent upstream (and again for
  every retry of it); the last chance to edit ``ctx.request_headers``.
- ``on_response(ctx, status, headers)``: the response head (from upstream, or local) is about
  to be written to the client. ``headers`` may be edited in place. Runs in reverse filter order.
- ``on_response_body(ctx, chunk, end_stream)``: each piece of the response body, in reverse
  filter order, before it goes to the client; returns as ``on_request_body`` (``None`` or
  replacement bytes), or a ``LocalResponse`` to answer that instead when nothing of the
  response has been sent yet (a whole body), else the response is cut short. With
  ``response_body_buffer > 0`` the session collects the whole
  response body first (a larger one is answered 502) and calls this phase once. Not called
  for responses without a body (HEAD, 204, 304) nor for local answers.
- ``on_trailers(ctx, trailers)``: the response's trailer fields (chunked trailers on HTTP/1.1,
  a trailing HEADERS frame on HTTP/2; gRPC's ``grpc-status`` lives there), editable in place;
  called only when the response has trailers.
- ``on_log(ctx)``: the exchange is over (or aborted); metrics, access log, traces.

Body framing: when a route has a body filter that may change lengths (``body_inspect_only``
false), the session drops ``Content-Length`` for that body and frames it itself (chunked on
HTTP/1.1), or sends the new length when the whole body was buffered. A filter that only looks
(a WAF in detection mode) sets ``body_inspect_only``: framing is kept and no chunk is copied.
A filter that changes only some response bodies (compression) defines
``on_response_framing(ctx, status, headers, length) -> bool``: called just before the head is
sent (after every ``on_response``), with the upstream's Content-Length, it may still edit the
head and says whether it will change this body; when no filter will, the length is kept.
A route without body filters pays nothing for the body phases.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Protocol, TypeVar, cast

from mypy_extensions import mypyc_attr
from pydantic import BaseModel

Headers = list[tuple[bytes, bytes]]
T = TypeVar("T")


class FilterContext(Protocol):
    """What a filter may read and edit of the exchange in flight."""

    method: bytes
    path: bytes
    query: bytes
    host: str
    client_ip: str
    request_id: bytes  # x-request-id: sent upstream, returned, logged (docs/reference.md)
    request_headers: Headers
    state: dict[str, Any] | None  # per-request data shared between a filter's phases
    consumer: Any  # the consumer an auth policy identified (ir.ConsumerIR), or None
    route: Any  # the matched rule (runtime.compiled.CompiledRoute): route_label, rule_label
    req_chunked: bool  # the request body is chunked (its size is unknown up front)


class FilterEnv:
    """What a filter may use at build time besides its spec.

    ``shared(key, factory)`` returns one object per worker and key, created by ``factory`` on
    first use and kept across configuration versions (connection pools to Redis or an auth
    service, JWKS caches, rate-limit stores). Keys must encode every setting the object
    depends on, so a changed setting gets a new object. ``snapshot`` is the IR being compiled
    (consumers, for instance, live there).
    """

    __slots__ = ("_objects", "loop", "snapshot")

    def __init__(self, loop: Any, snapshot: Any = None) -> None:
        self.loop = loop
        self.snapshot = snapshot
        self._objects: dict[Any, Any] = {}

    def shared(self, key: Any, factory: Callable[[], T]) -> T:
        obj = self._objects.get(key)
        if obj is None:
            obj = self._objects[key] = factory()
        return cast(T, obj)

    def for_snapshot(self, snapshot: Any) -> FilterEnv:
        """The same shared objects, seen while compiling ``snapshot``."""
        env = FilterEnv(self.loop, snapshot)
        env._objects = self._objects
        return env


class LocalResponse:
    """An answer produced by the gateway itself instead of the upstream."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        headers: Headers | None = None,
        content_type: bytes = b"text/plain; charset=utf-8",
    ) -> None:
        self.status = status
        self.body = body
        self.headers: Headers = headers if headers is not None else []
        self.content_type = content_type


@mypyc_attr(allow_interpreted_subclasses=True)  # plugins and uncompiled policies subclass it
class Filter:
    """Base of every policy filter; subclasses override only the phases they use.

    Body declarations (instance attributes, set in ``__init__`` after ``super().__init__``):
    ``request_body_buffer`` / ``response_body_buffer``: 0 streams the body through the body
    phase chunk by chunk; N > 0 asks for the whole body, at most N bytes, in one call.
    ``body_inspect_only``: the body phases never return replacement bytes."""

    policy_type: ClassVar[str] = ""  # its row in policies/table.py
    settings_model: ClassVar[type[BaseModel]] = BaseModel  # what ``from_spec`` is given
    # Plugins only (docs/plugins.md): the built-in phase the filter runs just before or just
    # after, one of the two; neither: after "headers". Built-in filters have their table row.
    before: ClassVar[str | None] = None
    after: ClassVar[str | None] = None

    __slots__ = ("body_inspect_only", "request_body_buffer", "response_body_buffer", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.request_body_buffer = 0
        self.response_body_buffer = 0
        self.body_inspect_only = False

    @classmethod
    def from_spec(cls, settings: Any, source: str, env: FilterEnv) -> Filter:
        """The filter for one policy: ``settings`` is a validated ``settings_model``
        instance, ``source`` names where the policy was attached (for messages)."""
        raise NotImplementedError

    @classmethod
    def maker(cls, settings: Any, source: str, env: FilterEnv) -> Callable[[], Filter]:
        """What builds the filters of one policy that many rules apply (a Gateway's: each
        rule gets a filter of its own, since a filter may keep state): ``from_spec`` for
        each. A class whose filters share what ``from_spec`` precomputes, never changed
        after, may precompute it once here (built-in types: a plugin's filters are built by
        its ``from_spec``, whose errors name the plugin)."""
        return functools.partial(cls.from_spec, settings, source, env)

    def on_request(
        self, ctx: FilterContext
    ) -> LocalResponse | Awaitable[LocalResponse | None] | None:
        return None

    def on_upstream_request(self, ctx: FilterContext) -> None:
        return None

    def on_request_body(
        self, ctx: FilterContext, chunk: bytes, end_stream: bool
    ) -> bytes | LocalResponse | None:
        return None

    def on_response(self, ctx: FilterContext, status: int, headers: Headers) -> None:
        return None

    def on_response_body(self, ctx: FilterContext, chunk: bytes, end_stream: bool
                         ) -> bytes | LocalResponse | None:
        return None

    def on_trailers(self, ctx: FilterContext, trailers: Headers) -> None:
        return None

    def on_log(self, ctx: FilterContext) -> None:
        return None


PHASES: tuple[str, ...] = (
    "on_request", "on_request_body", "on_upstream_request", "on_response", "on_response_body",
    "on_trailers", "on_log",
)


def overrides(filter_: Filter, phase: str) -> bool:
    """Whether the filter's class implements ``phase`` (rather than inheriting the no-op)."""
    return getattr(type(filter_), phase) is not getattr(Filter, phase)
