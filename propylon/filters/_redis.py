"""What the Redis clients of ``rateLimit`` (``_buckets``) and ``cache`` (``_cache_store``)
share: their login, and how a failure is told in the log (never with the password)."""

from __future__ import annotations

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
