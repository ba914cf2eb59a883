"""HTTP/1.1 client-side wire format for ``httpclient``: request bytes, response heads and
body framing (RFC 9112), over an ``asyncio.StreamReader``.

One function decides how an answer's body is delimited (``body_framing``), after the final
head: interim ``1xx`` heads are read past by ``read_final_head`` and never taken as the
answer. Sizes are bounded: the head by the reader's limit, a body by ``limit``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

Headers = list[tuple[bytes, bytes]]

READ = 64 * 1024
MAX_INTERIM = 8  # 1xx answers read past before the final one; more is an abuse
_HEX = b"0123456789abcdefABCDEF"

# body framings (``body_framing``)
NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE = range(4)


def request_bytes(method: bytes, target: bytes, authority: bytes, headers: Headers,
                  body: bytes, close: bool) -> bytes:
    """A request head and its body; ``content-length`` is set whenever there is a body and
    for the methods that expect one."""
    lines = [method, b" ", target, b" HTTP/1.1\r\nhost: ", authority, b"\r\n"]
    for name, value in headers:
        lines += [name, b": ", value, b"\r\n"]
    if body or method in (b"POST", b"PUT", b"PATCH"):
        lines += [b"content-length: ", str(len(body)).encode(), b"\r\n"]
    if close:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines) + body


async def read_final_head(reader: asyncio.StreamReader) -> tuple[int, Headers]:
    """The final (non-1xx) response head. Interim answers (``100 Continue``, ``103 Early
    Hints``) are read past: taking one for the answer would leave the real answer in the
    connection for the next request to read. A ``101`` was never asked for: an error."""
    for _ in range(MAX_INTERIM):
        status, headers = parse_head(await reader.readuntil(b"\r\n\r\n"))
        if status >= 200:
            return status, headers
        if status == 101:
            raise ValueError("101 Switching Protocols to a request that did not ask to upgrade")
    raise ValueError(f"more than {MAX_INTERIM} interim (1xx) answers")


def parse_head(head: bytes) -> tuple[int, Headers]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not (
            len(parts[1]) == 3 and parts[1].isdigit()):
        raise ValueError("not an HTTP/1.x response")
    headers: Headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise ValueError("malformed header line")
        headers.append((name.strip().lower(), value.strip()))
    if parts[0] == b"HTTP/1.0" and not any(
            name == b"connection" and b"keep-alive" in value.lower() for name, value in headers):
        # an HTTP/1.0 answer closes its connection unless it says keep-alive (RFC 9112
        # §9.3): its head says so as an HTTP/1.1 one would
        headers.append((b"connection", b"close"))
    return int(parts[1]), headers


def body_framing(method: bytes, status: int, headers: Headers) -> tuple[int, int, bool]:
    """How the body of an answer is delimited (RFC 9112 §6.3): ``(framing, length,
    reusable)``, ``reusable`` false when the connection cannot carry another request."""
    reusable = True
    length = coding = None
    for name, value in headers:
        if name == b"content-length":
            if length is not None and value != length:
                raise ValueError("conflicting Content-Length fields")
            length = value
        elif name == b"transfer-encoding":
            coding = value.lower()
        elif name == b"connection" and b"close" in value.lower():
            reusable = False
    if method == b"HEAD" or status in (204, 304):
        return NO_BODY, 0, reusable
    if coding is not None:
        # with a Content-Length too the message is suspect (smuggling): never reuse
        reusable = reusable and length is None
        if coding.rsplit(b",", 1)[-1].strip() == b"chunked":
            return CHUNKED, 0, reusable
        return UNTIL_CLOSE, 0, False
    if length is not None:
        if not length.isdigit():
            raise ValueError("invalid Content-Length")
        return LENGTH, int(length), reusable
    return UNTIL_CLOSE, 0, False


async def read_body(reader: asyncio.StreamReader, framing: int, length: int,
                    limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes (``ValueError`` beyond)."""
    if framing == NO_BODY:
        return b""
    if framing == LENGTH:
        if length > limit:
            raise ValueError("response body too large")
        return await reader.readexactly(length)
    if framing == CHUNKED:
        out = bytearray()
        while (chunk := await read_chunk(reader, limit - len(out))) is not None:
            out += chunk
        return bytes(out)
    data = bytearray()
    while piece := await reader.read(READ):  # to the close
        data += piece
        if len(data) > limit:
            raise ValueError("response body too large")
    return bytes(data)


async def iter_body(reader: asyncio.StreamReader, framing: int, length: int,
                    limit: int) -> AsyncIterator[bytes]:
    """The body piece by piece as it arrives (a long-lived answer); ``limit`` bounds each
    chunk of a chunked body, not the whole. Ends at the end of the body (or at the close that
    ends a body read to the close)."""
    if framing == CHUNKED:
        while (chunk := await read_chunk(reader, limit)) is not None:
            yield chunk
    elif framing == LENGTH:
        while length:
            data = await reader.read(min(READ, length))
            if not data:
                raise asyncio.IncompleteReadError(b"", length)
            length -= len(data)
            yield data
    elif framing == UNTIL_CLOSE:
        while data := await reader.read(READ):
            yield data


async def read_chunk(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """One chunk's data, or None after the last chunk and its trailers (which are read and
    dropped). A chunk larger than ``limit`` is a ``ValueError``."""
    size_field = (await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip()
    if not size_field or size_field.strip(_HEX):
        raise ValueError("invalid chunk size")
    size = int(size_field, 16)
    if size == 0:
        while (await reader.readuntil(b"\r\n")) != b"\r\n":
            pass  # trailers
        return None
    if size > limit:
        raise ValueError("response body too large")
    data = await reader.readexactly(size)
    if await reader.readexactly(2) != b"\r\n":
        raise ValueError("malformed chunk")
    return data
