"""Accepting connections on a listening socket, with a cap on open connections.

asyncio's servers accept whenever the socket is readable; a gateway must stop accepting when it
holds ``max_connections`` (pending clients then wait in the kernel's backlog or go to another
worker on the same SO_REUSEPORT port) and start again when connections close. So the worker
owns the accept loop: it watches the listening socket, accepts up to a batch per wake-up, and
hands each socket to the loop as a transport (with TLS when the listener has it).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from propylon.proxy.proxy_accept import ProxyRefused, read_header_before_tls

if TYPE_CHECKING:
    from propylon.proxy.worker_state import ListenerState

log = logging.getLogger("propylon.proxy")

_BATCH = 64  # accepts per wake-up, so one busy listener cannot starve the loop
_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Acceptor:
    __slots__ = (
        "_accepting",
        "_closed",
        "_tasks",
        "factory",
        "listener",
        "loop",
        "max_connections",
        "open",
        "sock",
        "ssl_context",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.factory = factory
        self.ssl_context: ssl.SSLContext | None = None
        # set by the listener: with TLS and a PROXY protocol mode, the header is read here
        self.listener: ListenerState | None = None
        self.max_connections = 10000
        self.open = 0
        self._accepting = False
        self._closed = False
        self._tasks: set[asyncio.Future[Any]] = set()

    def start(self) -> None:
        if not self._accepting and not self._closed:
            self.loop.add_reader(self.sock.fileno(), self._on_readable)
            self._accepting = True

    def pause(self) -> None:
        if self._accepting:
            self.loop.remove_reader(self.sock.fileno())
            self._accepting = False

    def close(self) -> None:
        self.pause()
        self._closed = True
        self.sock.close()

    def connection_closed(self) -> None:
        """Called by each connection this acceptor opened, once, when it ends."""
        self.open -= 1
        if not self._accepting and self.open < self.max_connections:
            self.start()

    def _on_readable(self) -> None:
        for _ in range(_BATCH):
            if self.open >= self.max_connections:
                self.pause()
                return
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    log.error("accept failed (%s); pausing accept for 100 ms", exc)
                    self.pause()
                    self.loop.call_later(0.1, self.start)
                return
            self._adopt(conn)

    def _adopt(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.open += 1
        listener = self.listener
        if (self.ssl_context is not None and listener is not None
                and listener.proxy_protocol is not None):
            header_task = asyncio.ensure_future(self._adopt_after_proxy_header(conn, listener))
            self._tasks.add(header_task)
            header_task.add_done_callback(self._adopted)
            return
        task = asyncio.ensure_future(
            self.loop.connect_accepted_socket(
                self.factory, sock=conn, ssl=self.ssl_context,
                ssl_handshake_timeout=10.0 if self.ssl_context else None,
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._adopted)

    async def _adopt_after_proxy_header(
        self, conn: socket.socket, listener: ListenerState
    ) -> None:
        """HTTPS with the PROXY protocol: the header precedes the TLS handshake."""
        assert listener.proxy_protocol is not None
        try:
            header = await read_header_before_tls(
                self.loop, conn, listener.proxy_protocol, listener.header_read_timeout)
        except ProxyRefused as exc:
            listener.count_proxy_error(exc.reason)
            log.info("closing a connection: PROXY protocol %s (%s)", exc.reason, exc)
            conn.close()
            raise
        except BaseException:
            conn.close()
            raise

        def factory() -> asyncio.Protocol:
            protocol = self.factory()
            preset: Any = getattr(protocol, "preset_proxy_header", None)
            if preset is not None:
                preset(header)
            return protocol

        await self.loop.connect_accepted_socket(
            factory, sock=conn, ssl=self.ssl_context, ssl_handshake_timeout=10.0)

    def _adopted(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is not None:
            # The connection never reached its protocol (a failed TLS handshake, say); the
            # transport has closed the socket already.
            self.connection_closed()
