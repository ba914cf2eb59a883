"""Pure functions that compute what an exchange sends: rewritten paths, redirect targets,
and the response fields passed on to the client."""

from __future__ import annotations

from propylon.ir import RedirectIR
from propylon.proxy.hostport import split_host
from propylon.proxy.http11 import HOP_BY_HOP, Headers, connection_tokens


def rewrite_path(
    path: bytes, prefix_from: bytes | None, prefix_to: bytes, replace_path: bytes | None
) -> bytes:
    """The upstream path: a full replacement, or the matched prefix replaced (Gateway API's
    ReplacePrefixMatch: ``/api`` -> ``/`` makes ``/api/x`` ``/x`` and ``/api`` ``/``)."""
    if replace_path is not None:
        return replace_path
    if prefix_from is None:
        return path
    rest = path[len(prefix_from):]
    new = (prefix_to.rstrip(b"/") + rest) if rest else (prefix_to or b"/")
    return new if new.startswith(b"/") else b"/" + new


def redirect_location(
    redirect: RedirectIR,
    own_scheme: str,
    host_field: bytes,
    request_host: str,
    path: bytes,
    query: bytes,
    prefix_from: bytes | None = None,
) -> str:
    """The Location of a redirect: configured parts replace the request's. A scheme change
    drops the request's port unless a port is configured; default ports are left out. A
    ``prefix`` redirect replaces ``prefix_from`` (the matched prefix) as a rewrite does."""
    scheme = redirect.scheme or own_scheme
    field_host, field_port = split_host(host_field)
    host = redirect.host or field_host or request_host
    if redirect.port is not None:
        port: int | None = redirect.port
    elif scheme != own_scheme:
        port = None
    else:
        port = field_port
    default_port = 80 if scheme == "http" else 443
    authority = host if port in (default_port, None) else f"{host}:{port}"
    if redirect.prefix is not None and prefix_from is not None:
        path = rewrite_path(path, prefix_from, redirect.prefix.encode("latin-1"), None)
    location = f"{scheme}://{authority}{redirect.path or path.decode('latin-1')}"
    return location + "?" + query.decode("latin-1") if query else location


RESPONSE_HOP_FIELDS = HOP_BY_HOP | {b"content-length"}


def response_fields(fields: Headers, hop: Headers) -> tuple[Headers, bool]:
    """An upstream response's fields to pass on and whether it is chunked (framing is chosen
    again for the client). ``hop`` holds the fields named in ``RESPONSE_HOP_FIELDS``, which
    the parser callback kept apart from ``fields`` (but Content-Length and a plain
    ``Connection: keep-alive/close``, which need no work); fields named in Connection are
    removed from ``fields`` as well."""
    chunked = False
    connection: bytes | None = None
    for name, value in hop:
        if name == b"connection":
            connection = value if connection is None else connection + b"," + value
        elif name == b"transfer-encoding":
            chunked = True
    if connection is not None and connection.lower() not in PLAIN_CONNECTION:
        named = connection_tokens(connection)
        fields = [h for h in fields if h[0] not in named]
    return fields, chunked


PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})
