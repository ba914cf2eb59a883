"""Upstreams that expect a PROXY protocol header (as HAProxy's accept-proxy): plaintext
(``ProxyProtocolUpstream``, then HTTP like ``ScriptedUpstream``) and TLS after the header
(``ProxyTLSUpstream``, which peeks so that no TLS byte is read early)."""

from __future__ import annotations

import asyncio
import ssl
import time

from propylon.proxy.proxy_protocol import (
    Parsed,
    ProxyHeader,
    ProxyHeaderReader,
    ProxyProtocolError,
)
from tests.support.upstream import ScriptedUpstream


class ProxyProtocolUpstream(ScriptedUpstream):
    def __init__(self, name: str = "pp") -> None:
        super().__init__(name)
        self.headers: list[ProxyHeader] = []
        self.refused = 0  # connections without a valid header (closed, as a strict server)

    def reset(self, handler=None) -> None:  # type: ignore[no-untyped-def]
        super().reset(handler)
        with self._lock:
            self.headers.clear()
            self.refused = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # stop() cancels it while it waits for a header, too
        try:
            header = await self._read_header(reader)
            if header is None:
                with self._lock:
                    self.refused += 1
                writer.close()
                return
            with self._lock:
                self.headers.append(header)
        except (asyncio.CancelledError, ConnectionError):
            self._tasks.discard(task)
            writer.close()
            return
        await super()._serve(reader, writer)

    @staticmethod
    async def _read_header(reader: asyncio.StreamReader) -> ProxyHeader | None:
        header_reader = ProxyHeaderReader()
        try:
            for _ in range(4096):  # a byte at a time: nothing of HTTP (or TLS) is read here
                byte = await reader.read(1)
                if not byte:
                    return None
                result = header_reader.feed(byte)
                if isinstance(result, Parsed):
                    return result.header
        except ProxyProtocolError:
            return None
        return None


class ProxyTLSUpstream:
    """A blocking, threaded HTTPS upstream that expects a PROXY header in the clear before the
    TLS handshake. The header is peeked (MSG_PEEK) and consumed exactly, so no TLS byte is
    read early. Each connection answers one request with 200 and closes."""

    def __init__(self, context: ssl.SSLContext) -> None:
        import socket
        import threading

        self.context = context
        self.headers: list[ProxyHeader | None] = []  # None: a connection without a header
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    def start(self) -> ProxyTLSUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        self._sock.close()

    def _accept_loop(self) -> None:
        import threading

        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve_one, args=(conn,), daemon=True).start()

    def _serve_one(self, conn: object) -> None:
        import socket

        from propylon.proxy.proxy_protocol import parse_proxy_header

        assert isinstance(conn, socket.socket)
        conn.settimeout(5)
        try:
            header = None
            for _ in range(100):
                data = conn.recv(4096, socket.MSG_PEEK)
                if not data:
                    break
                result = parse_proxy_header(data)
                if result is not None:
                    header, used = result
                    conn.recv(used)
                    break
                time.sleep(0.01)
            with self._lock:
                self.headers.append(header)
            if header is None:
                return
            tls = self.context.wrap_socket(conn, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = tls.recv(4096)
                if not chunk:
                    return
                head += chunk
            with self._lock:
                self.paths.append(head.split(b" ", 2)[1].decode("latin-1"))
            tls.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            tls.close()
        except (OSError, ProxyProtocolError):
            pass
        finally:
            conn.close()
