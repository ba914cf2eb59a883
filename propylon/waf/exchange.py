"""One request's ModSecurity transaction, driven from the event loop, run on a thread pool.

Engine calls take from ~0.3 ms (a bodiless GET) to tens of milliseconds (a JSON body with
hundreds of fields, each one an ARGS entry every CRS rule looks at), so they never run on the
event loop: each step is one job on the worker's ``pool`` (ctypes releases the GIL for the
C call; docs/design.md "WAF engine calls" has the measurements behind this choice).

Invariants:
- jobs of one exchange never overlap (``lock``), and the transaction is freed exactly once,
  by ``close``, after any job that is running; a job that starts after ``close`` does nothing;
- cancelling the awaiting request (client gone) never frees memory a running job uses: the
  job finishes on its thread, then ``close`` (queued by the filter's ``on_log``) frees it.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from propylon.waf._libmodsecurity import Transaction, engine
from propylon.waf.report import Finding, finding
from propylon.waf.rules import WafRules

POOL_THREADS = 2


def new_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="propylon-waf")


class RequestView:
    """What the rules see of a request head: copied on the loop, read on the pool."""

    __slots__ = ("client_ip", "headers", "method", "server", "server_port", "uri", "version")

    def __init__(self, method: bytes, uri: bytes, version: bytes,
                 headers: list[tuple[bytes, bytes]], client_ip: str, server: str,
                 server_port: int) -> None:
        self.method = method
        self.uri = uri
        self.version = version
        self.headers = headers
        self.client_ip = client_ip
        self.server = server
        self.server_port = server_port


class WafExchange:
    __slots__ = ("body", "body_waiter", "closed", "closing", "known", "lock", "transaction")

    def __init__(self) -> None:
        self.known: frozenset[str] = frozenset()
        self.lock = threading.Lock()
        self.transaction: Transaction | None = None
        self.closed = False
        self.closing = False  # a close job was queued (on the loop's side)
        self.body: bytes | None = None
        self.body_waiter: asyncio.Future[bytes] | None = None

    # -- on the event loop ---------------------------------------------------------------
    def set_body(self, body: bytes) -> None:
        self.body = body
        waiter = self.body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(body)

    async def whole_body(self) -> bytes:
        if self.body is not None:
            return self.body
        waiter = self.body_waiter = asyncio.get_running_loop().create_future()
        return await waiter

    def release(self, pool: ThreadPoolExecutor) -> None:
        """Free the transaction (on the pool, after any running job); idempotent."""
        if self.closing:
            return
        self.closing = True
        if self.transaction is None and self.lock.acquire(blocking=False):
            self.closed = True  # no job ran nor runs: nothing to free
            self.lock.release()
            return
        pool.submit(self.close)

    # -- on the pool ----------------------------------------------------------------------
    def inspect_request(self, rules: WafRules, view: RequestView, body: bytes
                        ) -> Finding | None:
        with self.lock:
            if self.closed:
                return None
            self.known = rules.known_ids
            t = self.transaction = engine().transaction(rules.rule_set)
            t.connection(view.client_ip, 0, view.server, view.server_port)
            t.request_head(view.method, view.uri, view.version, view.headers)
            found = t.intervention()
            if found is None:
                t.request_body(body)
                found = t.intervention()
            if found is None:
                return None
            return finding("request", found.status, t.lines, found.log, self.known)

    def inspect_response(self, status: int, version: bytes,
                         headers: list[tuple[bytes, bytes]]) -> Finding | None:
        """Response headers, then the transaction is freed (nothing more is inspected)."""
        with self.lock:
            t = self.transaction
            if self.closed or t is None:
                return None
            seen = len(t.lines)
            try:
                t.response_head(status, version, headers)
                found = t.intervention()
                if found is None:
                    return None
                return finding("response", found.status, t.lines[seen:], found.log,
                               self.known)
            finally:
                self._close_locked()

    def close(self) -> None:
        with self.lock:
            self._close_locked()

    def _close_locked(self) -> None:
        self.closed = True
        if self.transaction is not None:
            self.transaction.close()
            self.transaction = None
