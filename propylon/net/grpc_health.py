"""The gRPC health check (``grpc.health.v1.Health/Check``), for active health checks of
HTTP/2 upstreams that are gRPC servers: one HTTP/2 connection per probe (h2c, or TLS with
ALPN h2), one call, the answer's ``grpc-status`` and ``HealthCheckResponse.status`` read; the
endpoint is healthy when the call succeeds and the status is SERVING.

The messages are two one-field protobufs, encoded and decoded here by hand:
``HealthCheckRequest{string service = 1}`` and ``HealthCheckResponse{ServingStatus status =
1}`` (SERVING = 1).
"""

from __future__ import annotations

import asyncio
import ssl

import h2.config
import h2.connection
import h2.events
import h2.exceptions

SERVING = 1
_PATH = b"/grpc.health.v1.Health/Check"
_MAX_ANSWER = 64 * 1024


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def request_message(service: str) -> bytes:
    """A length-prefixed gRPC message holding ``HealthCheckRequest{service}``."""
    name = service.encode()
    body = b"\x0a" + _varint(len(name)) + name if name else b""
    return b"\x00" + len(body).to_bytes(4, "big") + body


def serving_status(data: bytes) -> int | None:
    """``HealthCheckResponse.status`` from a length-prefixed gRPC message (0 when absent, as
    proto3 encodes UNKNOWN), or None when it is not one."""
    if len(data) < 5 or data[0] != 0:
        return None
    body = data[5:5 + int.from_bytes(data[1:5], "big")]
    pos, status = 0, 0
    while pos < len(body):
        tag = body[pos]
        pos += 1
        if tag & 0x07 != 0:  # only varint fields are expected; anything else: give up
            return None
        value, shift = 0, 0
        while pos < len(body):
            byte = body[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if tag >> 3 == 1:
            status = value
    return status


async def check(host: str, port: int, service: str, authority: str, timeout: float,
                tls: ssl.SSLContext | None = None, server_hostname: str | None = None,
                preamble: bytes = b"") -> bool:
    """One probe; False on any failure (connect, protocol, timeout, a status other than
    OK with SERVING)."""
    try:
        return await asyncio.wait_for(
            _call(host, port, service, authority, tls, server_hostname, preamble), timeout)
    except (TimeoutError, OSError, h2.exceptions.ProtocolError, ValueError):
        return False


async def _call(host: str, port: int, service: str, authority: str,
                tls: ssl.SSLContext | None, server_hostname: str | None,
                preamble: bytes) -> bool:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if preamble:
            writer.write(preamble)
        if tls is not None:
            await writer.start_tls(tls, server_hostname=server_hostname)
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [
            (b":method", b"POST"), (b":scheme", b"https" if tls else b"http"),
            (b":authority", authority.encode()), (b":path", _PATH),
            (b"content-type", b"application/grpc"), (b"te", b"trailers"),
            (b"user-agent", b"propylon-health-check")])
        conn.send_data(stream, request_message(service), end_stream=True)
        writer.write(conn.data_to_send())
        body = b""
        grpc_status: bytes | None = None
        while True:
            data = await reader.read(65536)
            if not data:
                return False
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    fields = dict(event.headers or [])
                    if fields.get(b":status", b"200") != b"200":
                        return False
                    grpc_status = fields.get(b"grpc-status", grpc_status)
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream:
                    body += event.data or b""
                    conn.acknowledge_received_data(event.flow_controlled_length, stream)
                    if len(body) > _MAX_ANSWER:
                        return False
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                    return grpc_status == b"0" and serving_status(body) == SERVING
                elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                    return False
            writer.write(conn.data_to_send())
    finally:
        writer.close()
