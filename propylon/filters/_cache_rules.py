"""RFC 9111 rules of the shared cache, pure: what may be stored, for how long, what a stored
answer's age is, and whether a client's conditional request matches it.

Storable (§3): a final answer to GET whose status is not 206 or 304, without ``no-store``
(request or response), ``private``, ``Set-Cookie`` or ``Vary: *``; to a request with
``Authorization`` only when the answer says ``public``, ``s-maxage`` or ``must-revalidate``
(§3.5); and with a freshness lifetime: ``s-maxage``, else ``max-age``, else ``Expires`` minus
``Date``, else the policy's ``defaultTtl`` (a heuristic allowed only for the statuses cacheable
by default, §4.2.2). ``no-cache`` (and a zero lifetime) stores it stale: it is revalidated
before every use. ``must-revalidate``, ``proxy-revalidate`` and ``s-maxage`` forbid serving it
stale (§4.2.4), so ``stale-while-revalidate`` and ``stale-if-error`` (RFC 5861) do not apply.
"""

from __future__ import annotations

from collections.abc import Iterable
from email.utils import format_datetime, parsedate_to_datetime

Headers = list[tuple[bytes, bytes]]

# §4.2.2: heuristically cacheable statuses (206 excluded: ranges are not stored)
CACHEABLE_BY_DEFAULT = frozenset((200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501))


def directives(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The Cache-Control directives (lower-case names; a value without quotes, or "")."""
    found: dict[str, str] = {}
    for name, value in headers:
        if name != b"cache-control":
            continue
        for item in value.decode("latin-1").split(","):
            key, _, arg = item.partition("=")
            key = key.strip().lower()
            if key:
                found[key] = arg.strip().strip('"')
    return found


def seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(float(int(value)), 0.0)
    except ValueError:
        return None


def http_date(value: bytes | None) -> float | None:
    if value is None:
        return None
    try:
        return parsedate_to_datetime(value.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def format_date(timestamp: float) -> bytes:
    from datetime import UTC, datetime
    return format_datetime(datetime.fromtimestamp(timestamp, UTC), usegmt=True).encode()


def field(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def vary_names(headers: Headers) -> tuple[str, ...] | None:
    """The request fields an answer varies on (sorted, lower-case); None for ``Vary: *``."""
    names: set[str] = set()
    for key, value in headers:
        if key == b"vary":
            for item in value.decode("latin-1").split(","):
                item = item.strip().lower()
                if item == "*":
                    return None
                if item:
                    names.add(item)
    return tuple(sorted(names))


def lifetime(status: int, response: dict[str, str], headers: Headers,
             default_ttl: float) -> float | None:
    """The freshness lifetime in seconds; None: no basis for one (not storable)."""
    for name in ("s-maxage", "max-age"):
        if name in response:
            return seconds(response[name]) or 0.0
    expires = field(headers, b"expires")
    if expires is not None:
        at = http_date(expires)
        date = http_date(field(headers, b"date"))
        if at is None:
            return 0.0  # an invalid Expires means already expired (§5.3)
        if date is None:
            import time
            date = time.time()
        return max(at - date, 0.0)
    if default_ttl > 0 and status in CACHEABLE_BY_DEFAULT:
        return default_ttl
    if "public" in response and status in CACHEABLE_BY_DEFAULT:
        return 0.0  # storable, revalidated before use
    return None


def storable(status: int, request: Headers, request_cc: dict[str, str], headers: Headers,
             response_cc: dict[str, str], default_ttl: float) -> float | None:
    """The answer's freshness lifetime when it may be stored, else None."""
    if status < 200 or status in (206, 304) or "no-store" in request_cc:
        return None
    if "no-store" in response_cc or "private" in response_cc:
        return None
    if field(headers, b"set-cookie") is not None or vary_names(headers) is None:
        return None
    if field(request, b"authorization") is not None and not (
            {"public", "s-maxage", "must-revalidate"} & response_cc.keys()):
        return None
    life = lifetime(status, response_cc, headers, default_ttl)
    if life is None:
        return None
    return 0.0 if "no-cache" in response_cc else life


def may_serve_stale(response_cc: dict[str, str]) -> bool:
    return not ({"must-revalidate", "proxy-revalidate", "s-maxage", "no-cache"}
                & response_cc.keys())


def initial_age(headers: Headers, now: float) -> float:
    """§4.2.3's corrected initial age, with no response delay known: the larger of the
    answer's Age and how old its Date says it is."""
    age = seconds(_text(field(headers, b"age"))) or 0.0
    date = http_date(field(headers, b"date"))
    return max(age, now - date if date is not None else 0.0, 0.0)


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def etag_matches(if_none_match: bytes, etag: bytes | None) -> bool:
    """If-None-Match's weak comparison (RFC 9110 §13.1.2)."""
    if etag is None:
        return False
    if if_none_match.strip() == b"*":
        return True
    want = etag.removeprefix(b"W/")
    return any(tag.strip().removeprefix(b"W/") == want for tag in if_none_match.split(b","))


def not_modified(request: Headers, headers: Headers) -> bool:
    """Whether a client's conditional GET/HEAD is answered 304 by this stored answer."""
    if_none_match = field(request, b"if-none-match")
    if if_none_match is not None:
        return etag_matches(if_none_match, field(headers, b"etag"))
    since = http_date(field(request, b"if-modified-since"))
    if since is None:
        return False
    modified = http_date(field(headers, b"last-modified")) or http_date(
        field(headers, b"date"))
    return modified is not None and modified <= since


# Fields of a 304 answer (RFC 9110 §15.4.5) and fields a 304 from the origin updates.
NOT_MODIFIED_FIELDS = frozenset((b"cache-control", b"content-location", b"date", b"etag",
                                 b"expires", b"vary", b"last-modified"))
