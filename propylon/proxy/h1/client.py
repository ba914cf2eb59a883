"""The upstream side of the HTTP/1.1 codec: request heads serialised from parsed fields."""

from __future__ import annotations

from typing import TYPE_CHECKING

from propylon.proxy.http11 import connection_tokens, serialize_headers
from propylon.proxy.rewrite import rewrite_path

if TYPE_CHECKING:
    from propylon.proxy.session import Session
    from propylon.runtime.compiled import CompiledRoute


def serialize_request_head(session: Session, route: CompiledRoute) -> bytes:
    """The request head sent upstream, built once per request from parsed fields (never by
    copying the client's bytes): the rewritten target, end-to-end fields (minus those the
    client's Connection field names), forwarding fields, and the body's framing."""
    if route.prefix_from is None and route.replace_path is None:
        path = session.path
    else:
        path = rewrite_path(session.path, route.prefix_from, route.prefix_to, route.replace_path)
    target = path + b"?" + session.query if session.query else path
    headers = session.request_headers
    if session.conn_header is not None:
        named = connection_tokens(session.conn_header) - {b"close", b"keep-alive"}
        if named:
            headers = [h for h in headers if h[0] not in named]
    if not session.req_chunked:
        framing = b""
    elif session.te_codings:
        framing = b"transfer-encoding: " + session.te_codings + b", chunked\r\n"
    else:
        framing = b"transfer-encoding: chunked\r\n"
    proto = session.proto
    if proto.client_cert is not None:
        framing += b"x-forwarded-client-cert: " + proto.client_cert + b"\r\n"
    if session.upgrade is not None:
        framing += b"connection: upgrade\r\nupgrade: " + session.upgrade + b"\r\n"
    if not proto.peer_trusted and proto.forwarding_host == session.host_value:
        forwarding = proto.forwarding_fields  # the connection's cached fields
    else:
        forwarding = session.forwarding_fields()
    return b"".join((
        session.method, b" ", target, b" HTTP/1.1\r\n", serialize_headers(headers),
        forwarding, framing, b"\r\n",
    ))
