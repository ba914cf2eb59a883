"""A raw-socket HTTP/1.1 client: exact bytes out, responses parsed by hand, closes detected."""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

from tests.support.h1 import (
    MAX_HEAD,
    ProtocolError,
    Response,
    build_request,
    parse_chunk_size,
    parse_head,
    parse_status_line,
    parse_trailer_lines,
    response_framing,
)


class ConnectionClosed(AssertionError):
    """The peer closed (or reset) before a complete message arrived."""

    def __init__(self, message: str, partial: bytes = b"") -> None:
        super().__init__(f"{message} (got {len(partial)} bytes: {partial[:300]!r})")
        self.partial = partial


class RawClient:
    """One TCP connection to a gateway. Every read has a deadline (``timeout`` seconds)."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        timeout: float = 10.0,
        rcvbuf: int | None = None,
    ) -> None:
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window is small from the start
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = bytearray()
        self.eof = False

    # -- plumbing ------------------------------------------------------------------------
    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def local_port(self) -> int:
        return int(self.sock.getsockname()[1])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | dict[str, str] | None = None,
        body: bytes = b"",
        **options: Any,
    ) -> None:
        """Send a request built by ``h1.build_request`` (``host=``, ``version=`` ...)."""
        self.send(build_request(method, target, headers, body, **options))

    def _fill(self, deadline: float, size: int = 65536) -> bool:
        """Read more into the buffer; False at end of stream."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"read timed out; buffered {bytes(self.buf[:300])!r}")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(size)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def read_until(self, sep: bytes, deadline: float, limit: int = MAX_HEAD) -> bytes:
        while True:
            index = self.buf.find(sep)
            if index >= 0:
                end = index + len(sep)
                out = bytes(self.buf[:end])
                del self.buf[:end]
                return out
            if len(self.buf) > limit:
                raise ProtocolError(f"no {sep!r} within {limit} bytes")
            if not self._fill(deadline):
                raise ConnectionClosed(f"closed while waiting for {sep!r}", bytes(self.buf))

    def read_exact(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            if not self._fill(deadline, max(65536, n - len(self.buf))):
                raise ConnectionClosed(f"closed after {len(self.buf)} of {n} bytes",
                                       bytes(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_to_eof(self, deadline: float, limit: int = 256 * 1024 * 1024) -> bytes:
        while self._fill(deadline):
            if len(self.buf) > limit:
                raise ProtocolError("close-delimited body over the limit")
        out = bytes(self.buf)
        self.buf.clear()
        return out

    # -- messages ------------------------------------------------------------------------
    def read_response(self, method: str = "GET", timeout: float | None = None) -> Response:
        """The next response, 1xx included."""
        deadline = self._deadline(timeout)
        head = parse_head(self.read_until(b"\r\n\r\n", deadline))
        version, status, reason = parse_status_line(head)
        framing = response_framing(head, status, method)
        response = Response(version, status, reason, head, framing=framing)
        if framing == "length":
            response.body = self.read_exact(int(head.get("content-length") or 0), deadline)
        elif framing == "chunked":
            response.body, response.trailers = self._read_chunked(deadline)
        elif framing == "close":
            response.body = self.read_to_eof(deadline)
        return response

    def read_final(self, method: str = "GET", timeout: float | None = None) -> Response:
        """The next final (non-1xx) response; the 1xx ones before it go to ``.interim``."""
        interim = []
        for _ in range(10):
            response = self.read_response(method, timeout)
            if response.status >= 200:
                response.interim = interim
                return response
            interim.append(response)
        raise ProtocolError("more than 10 interim responses")

    def _read_chunked(self, deadline: float) -> tuple[bytes, list[tuple[str, str]]]:
        body = bytearray()
        for _ in range(10_000_000):
            size = parse_chunk_size(self.read_until(b"\r\n", deadline)[:-2])
            if size == 0:
                break
            body += self.read_exact(size, deadline)
            if self.read_exact(2, deadline) != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
        trailer_lines = []
        for _ in range(1000):
            line = self.read_until(b"\r\n", deadline)[:-2]
            if not line:
                break
            trailer_lines.append(line)
        return bytes(body), parse_trailer_lines(trailer_lines)

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True if the peer closes within ``timeout`` (any unread bytes are discarded)."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                self.buf.clear()
        except TimeoutError:
            return False
        return True


def roundtrip(
    port: int,
    method: str = "GET",
    target: str = "/",
    headers: list[tuple[str, str]] | dict[str, str] | None = None,
    body: bytes = b"",
    *,
    timeout: float = 10.0,
    **options: Any,
) -> Response:
    """One request on a new connection; the final response."""
    with RawClient(port, timeout=timeout) as client:
        client.request(method, target, headers, body, **options)
        return client.read_final(method)
