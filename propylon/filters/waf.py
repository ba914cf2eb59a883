"""The ``waf`` policy: ModSecurity v3 with the OWASP Core Rule Set (docs/policies.md).

Built per rule from ``WafPolicy``: the rule set is compiled once per worker and distinct
settings (``propylon/waf/rules.py``), shared by every rule and configuration version that
asks for the same. A request is inspected whole before the upstream is contacted: request
line, headers and body (the filter declares ``request_body_buffer = requestBodyLimit``, so
the session collects the body first; inspect only, framing kept). The engine runs on the
worker's WAF thread pool (``propylon/waf/exchange.py``), never on the event loop.

Phases:
- ``on_request``: returns the inspection as an awaitable; it waits for the whole body when
  the request has one (so every later filter and the upstream wait too), then runs phases
  1 and 2 of the rules in one pool job. In block mode an intervention answers the gateway's
  own 403 (``forbidden``; nothing of the rules reaches the client); in detect mode it is
  only logged. Cancelled with the request if the client goes away.
- ``on_request_body``: hands the whole body to the waiting inspection.
- ``on_response``: queues the response-header phase (and then the transaction's release)
  on the pool without waiting: a response header finding is logged and counted as
  ``detected`` in both modes, as the head is already on its way.
- ``on_log``: releases the transaction if nothing did (client gone, local answers).

Each intervention is one JSON log line (logger ``propylon.waf``) and counted by rule
(``propylon/observability/waf_metrics.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from propylon.filters._common import header, state
from propylon.filters.base import Filter, FilterContext, FilterEnv, Headers, LocalResponse
from propylon.observability.waf_metrics import WAF_COUNTERS
from propylon.policies.waf import WafPolicy
from propylon.waf._libmodsecurity import LibraryMissing
from propylon.waf.exchange import RequestView, WafExchange, new_pool
from propylon.waf.report import Finding
from propylon.waf.rules import WafRules, compile_rules, rule_parts

log = logging.getLogger("propylon.waf")

_STATE = "waf"  # ctx.state key: the request's WafExchange
_MAX_PATH = 200
FORBIDDEN = LocalResponse(403, b"forbidden\n")
TOO_LARGE = LocalResponse(413, b"request body too large\n")


class WafFilter(Filter):
    policy_type = "waf"
    settings_model = WafPolicy

    __slots__ = ("blocking", "limit", "mode", "pool", "rules")

    def __init__(self, source: str, settings: WafPolicy, rules: WafRules,
                 pool: ThreadPoolExecutor) -> None:
        super().__init__(source)
        self.rules = rules
        self.pool = pool
        self.mode = settings.mode
        self.blocking = settings.mode == "block"
        self.limit = settings.request_body_limit
        self.request_body_buffer = settings.request_body_limit
        self.body_inspect_only = True

    @classmethod
    def from_spec(cls, settings: WafPolicy, source: str, env: FilterEnv) -> WafFilter:
        try:
            parts = rule_parts(settings)
            rules = env.shared(("waf.rules", parts), lambda: compile_rules(parts))
        except (LibraryMissing, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from None
        return cls(source, settings, rules, env.shared(("waf.pool",), new_pool))

    # -- phases ----------------------------------------------------------------------------
    def on_request(self, ctx: FilterContext) -> Any:
        data = state(ctx)
        exchange = data.get(_STATE)
        if exchange is None:
            exchange = data[_STATE] = WafExchange()
        has_body = _has_body(ctx)
        if has_body and exchange.body is None:
            _release_expect_continue(ctx)
        return self.inspect(ctx, exchange, request_view(ctx), has_body)

    async def inspect(self, ctx: FilterContext, exchange: WafExchange, view: RequestView,
                      has_body: bool) -> LocalResponse | None:
        body = await exchange.whole_body() if has_body else b""
        if len(body) > self.limit:  # another filter of the route asked for a larger body
            if self.blocking:
                return TOO_LARGE
            body = body[:self.limit]
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(
            self.pool, exchange.inspect_request, self.rules, view, body)
        if found is None:
            return None
        if not self.blocking:
            self.report(ctx, found, "detected")
            return None
        self.report(ctx, found, "blocked")
        exchange.release(self.pool)  # the gateway's own answer is not inspected
        return FORBIDDEN

    def on_request_body(self, ctx: FilterContext, chunk: bytes, end_stream: bool
                        ) -> bytes | LocalResponse | None:
        data = state(ctx)
        exchange = data.get(_STATE)
        if exchange is None:  # the body came before the head was inspected
            exchange = data[_STATE] = WafExchange()
        exchange.set_body(chunk)
        return None

    def on_response(self, ctx: FilterContext, status: int, headers: Headers) -> None:
        data = ctx.state
        exchange = data.get(_STATE) if data is not None else None
        if exchange is None or exchange.closing:
            return
        if exchange.transaction is None:  # answered before inspection (or by it)
            exchange.release(self.pool)
            return
        exchange.closing = True
        version = b"1.1" if getattr(ctx, "http11", True) else b"1.0"
        job = self.pool.submit(exchange.inspect_response, status, version, list(headers))
        future = asyncio.wrap_future(job)
        future.add_done_callback(lambda done: self._response_done(ctx, done))

    def _response_done(self, ctx: FilterContext, done: asyncio.Future[Finding | None]
                       ) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        found = done.result()
        if found is not None:
            self.report(ctx, found, "detected")

    def on_log(self, ctx: FilterContext) -> None:
        data = ctx.state
        exchange = data.get(_STATE) if data is not None else None
        if exchange is not None:
            exchange.release(self.pool)

    # -- reports ---------------------------------------------------------------------------
    def report(self, ctx: FilterContext, found: Finding, action: str) -> None:
        WAF_COUNTERS.count(found.rule_ids, action)
        log.warning("%s", json.dumps(intervention_record(ctx, found, action, self),
                                     ensure_ascii=False, separators=(",", ":")))


def intervention_record(ctx: FilterContext, found: Finding, action: str, waf: WafFilter
                        ) -> dict[str, Any]:
    """The JSON log line of one intervention."""
    request_id = getattr(ctx, "request_id", None)
    route = ctx.route
    path = ctx.path.decode("latin-1")
    doc: dict[str, Any] = {
        "event": "waf",
        "action": action,
        "mode": waf.mode,
        "phase": found.phase,
        "request_id": request_id.decode("latin-1") if request_id else None,
        "client": ctx.client_ip,
        "method": ctx.method.decode("latin-1"),
        "host": ctx.host,
        "path": path if len(path) <= _MAX_PATH else path[:_MAX_PATH] + "...",
        "route": getattr(route, "route_label", None),  # as in the access log
        "rule": getattr(route, "rule_label", None),
        "policy": waf.source,
        "status": found.status,
        "rules": [m.to_json() for m in found.rules],
    }
    return doc


def request_view(ctx: FilterContext) -> RequestView:
    url = getattr(ctx, "url", None) or (ctx.path + (b"?" + ctx.query if ctx.query else b""))
    listener = getattr(getattr(ctx, "proto", None), "listener", None)
    return RequestView(
        ctx.method, url, b"1.1" if getattr(ctx, "http11", True) else b"1.0",
        list(ctx.request_headers), ctx.client_ip,
        getattr(listener, "address", "") or "", getattr(listener, "port", 0) or 0,
    )


def _has_body(ctx: FilterContext) -> bool:
    """Whether the session will hand a body to the body phase (as the codec decided)."""
    has_body = getattr(ctx, "has_body", None)
    if has_body is not None:
        return bool(has_body)
    length = header(ctx.request_headers, b"content-length")
    return ctx.req_chunked or (length is not None and length.strip() != b"0")


def _release_expect_continue(ctx: FilterContext) -> None:
    """The inspection waits for the body, which a client sending ``Expect: 100-continue``
    holds back until told to go on; the session would tell it only when forwarding. So the
    waf tells it (once) here. A filter API hook for an awaitable whole-body phase would make
    this unnecessary (docs/design.md, "WAF engine calls")."""
    if getattr(ctx, "expect_continue", False):
        ctx.expect_continue = False  # type: ignore[attr-defined]
        proto = getattr(ctx, "proto", None)
        if proto is not None:
            proto.send_continue()
