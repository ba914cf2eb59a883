"""What the Redis clients of ``rateLimit`` (``_buckets``) and ``cache`` (``_cache_store``)
share: their login, when a failing Redis is skipped, and how a failure is told in the log
(never with the password)."""

from __future__ import annotations

import time
from typing import Any


class PasswordUnreadable(Exception):
    """``redis.password`` could not be read at translation: the store is unusable, as a
    Redis that is down is (the failure mode applies)."""


def client_options(timeout: float, username: str | None, password: str | None,
                   password_error: str | None) -> dict[str, Any]:
    """redis-py client arguments: socket timeouts of ``timeout``, one immediate retry (a
    pooled connection a restarted Redis closed; redis-py's default retries with backoff, a
    refused login included, until the caller's deadline), the login. ``PasswordUnreadable``
    when the password could not be read."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    if password_error is not None:
        raise PasswordUnreadable(f"redis.password could not be read: {password_error}")
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                               "retry": Retry(NoBackoff(), 1)}
    if username is not None:
        options["username"] = username
    if password is not None:
        options["password"] = password
    return options


def failure(exc: BaseException, timeout: float) -> str:
    """Why a Redis operation failed, for the log."""
    from redis.exceptions import AuthenticationError

    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout * 1000:g}ms"
    if isinstance(exc, AuthenticationError):
        return f"authentication refused (check redis.username and redis.password): {exc}"
    if isinstance(exc, PasswordUnreadable):
        return str(exc)
    return repr(exc)


class Skipping:
    """When a Redis store is skipped: after ``FAILURES`` failed operations in a row, each
    started after the previous one was seen to fail (operations in flight together when Redis
    stalls are one failure: one slow moment under load never skips it), Redis is left alone
    for ``SKIP_SECONDS``; then one operation probes it (the others still skip until the probe
    is answered or times out), and an answer to any operation ends the skipping."""

    FAILURES = 3
    SKIP_SECONDS = 1.0

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.failures = 0
        self.counted_at = float("-inf")  # when the last failure counted was seen
        self.skip_until = 0.0

    @property
    def skipping(self) -> bool:
        return self.failures >= self.FAILURES

    def allows(self) -> bool:
        if not self.skipping:
            return True
        now = time.monotonic()
        if now < self.skip_until:
            return False
        self.skip_until = now + self.timeout  # this one probes: the others wait for it
        return True

    def answered(self) -> None:
        self.failures = 0

    def failed(self, started: float) -> None:
        now = time.monotonic()
        if started >= self.counted_at:
            self.failures += 1
            self.counted_at = now
        if self.skipping:
            self.skip_until = now + self.SKIP_SECONDS
