"""A strict reader of what the gateway wrote to a client: HTTP/1.1 responses, nothing else.

``read_responses`` parses the client's output against the methods of the client's requests,
in order (a HEAD answer has no body; a HEAD request the gateway rejected gets a 4xx with a body
and a close) and raises ``BadOutput`` at the first byte that is not a well-formed response.
Interim 1xx answers are skipped; a 101 ends HTTP (what follows is the tunnel). One final
response more than the requests is allowed: the 4xx that rejects an unparsable request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [\t\x20-\x7e\x80-\xff]*\r\n")
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+): ([\t\x20-\x7e\x80-\xff]*)\r\n")
_CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]{1,16})\r\n")


class BadOutput(AssertionError):
    """The gateway wrote something a client cannot read as HTTP/1.1 responses."""


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    closes: bool  # says "connection: close" (or has a close-delimited body)
    complete: bool = True

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)


def read_responses(out: bytes, methods: list[bytes], truncated_ok: bool) -> list[Response]:
    """Every final response in ``out``; ``truncated_ok``: the connection was aborted, so the
    last response may be cut short (the gateway's answer to an upstream failing mid-body)."""
    responses: list[Response] = []
    pos = 0
    while pos < len(out):
        if len(responses) > len(methods):
            raise BadOutput(f"more responses than requests: {out[pos:pos + 200]!r}")
        method = methods[len(responses)] if len(responses) < len(methods) else b"?"
        try:
            response, pos = _read_one(out, pos, method)
        except _Truncated:
            if not truncated_ok:
                raise BadOutput(f"a response ends early: {out[pos:pos + 300]!r}") from None
            responses.append(Response(0, [], b"", True, complete=False))
            return responses
        if response is None:
            continue  # an interim answer
        responses.append(response)
        if response.status == 101:
            return responses
        if response.closes and pos != len(out):
            raise BadOutput(f"bytes after a response that closes: {out[pos:pos + 200]!r}")
    return responses


class _Truncated(Exception):
    pass


def _read_one(out: bytes, pos: int, method: bytes) -> tuple[Response | None, int]:
    status, headers, pos = _read_head(out, pos)
    if 100 <= status < 200 and status != 101:
        return None, pos
    names = [n for n, _ in headers]
    closes = any(n == b"connection" and b"close" in v.lower() for n, v in headers)
    lengths = [v for n, v in headers if n == b"content-length"]
    codings = [v for n, v in headers if n == b"transfer-encoding"]
    if len(lengths) > 1 or len(codings) > 1 or (lengths and codings):
        raise BadOutput(f"ambiguous framing in a response: {names}")
    if method == b"HEAD" and closes and len(lengths) == 1 and lengths[0].isdigit() \
            and len(out) - pos == int(lengths[0]):
        method = b"?"  # a rejection of a HEAD request the gateway did not accept: with a body
    if status == 101 or method == b"HEAD" or status in (204, 304):
        if codings or (lengths and status in (204, 304)):
            raise BadOutput(f"framing fields on a {status} response to {method!r}")
        return Response(status, headers, b"", closes), pos
    if codings:
        if codings[0] != b"chunked":
            raise BadOutput(f"transfer-encoding {codings[0]!r} in a response")
        body, pos = _read_chunked(out, pos)
    elif lengths:
        if not lengths[0].isdigit():
            raise BadOutput(f"content-length {lengths[0]!r}")
        end = pos + int(lengths[0])
        if end > len(out):
            raise _Truncated
        body, pos = out[pos:end], end
    else:
        if not closes:
            raise BadOutput(f"a {status} response without framing that does not close")
        body, pos = out[pos:], len(out)
    return Response(status, headers, body, closes), pos


def _read_head(out: bytes, pos: int) -> tuple[int, list[tuple[bytes, bytes]], int]:
    end = out.find(b"\r\n\r\n", pos)
    if end < 0:
        raise _Truncated
    match = _STATUS_LINE.match(out, pos)
    if match is None:
        raise BadOutput(f"not a status line: {out[pos:pos + 100]!r}")
    status = int(match.group(1))
    headers: list[tuple[bytes, bytes]] = []
    pos = match.end()
    while pos < end + 2:
        field = _FIELD.match(out, pos)
        if field is None or field.end() > end + 2:
            raise BadOutput(f"not a header field: {out[pos:end + 2]!r}")
        headers.append((field.group(1).lower(), field.group(2)))
        pos = field.end()
    return status, headers, end + 4


def _read_chunked(out: bytes, pos: int) -> tuple[bytes, int]:
    body = bytearray()
    while True:
        match = _CHUNK_SIZE.match(out, pos)
        if match is None:
            if out.find(b"\r\n", pos) < 0:
                raise _Truncated
            raise BadOutput(f"bad chunk size line: {out[pos:pos + 40]!r}")
        size = int(match.group(1), 16)
        pos = match.end()
        if size == 0:
            break
        if pos + size + 2 > len(out):
            raise _Truncated
        if out[pos + size:pos + size + 2] != b"\r\n":
            raise BadOutput("a chunk does not end with CRLF")
        body += out[pos:pos + size]
        pos += size + 2
    while True:  # trailer fields, then the blank line
        if out.startswith(b"\r\n", pos):
            return bytes(body), pos + 2
        field = _FIELD.match(out, pos)
        if field is None:
            if out.find(b"\r\n", pos) < 0:
                raise _Truncated
            raise BadOutput(f"bad trailer field: {out[pos:pos + 60]!r}")
        pos = field.end()
