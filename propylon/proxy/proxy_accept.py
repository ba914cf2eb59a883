"""Reading a PROXY protocol header from an accepted socket before TLS starts.

asyncio's TLS transport reads the ClientHello itself, so on HTTPS listeners the header is read
by the acceptor first: the socket is peeked (``MSG_PEEK``) until a header is complete, then
exactly the header's bytes are consumed, leaving the TLS handshake untouched. Balancers send
the header in one segment; a header arriving in pieces is re-peeked every few milliseconds
until the listener's ``headerReadTimeout``.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

from propylon.proxy.proxy_protocol import (
    DEFAULT_MAX_LENGTH,
    ProxyHeader,
    ProxyProtocolError,
    looks_like_proxy_header,
    parse_proxy_header,
)

if TYPE_CHECKING:
    from propylon.proxy.worker_state import ProxyProtocolSettings

_REPEEK = 0.005


class ProxyRefused(Exception):
    """The connection must be closed; ``reason`` is the counter's label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket, timeout: float) -> None:
    ready: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await asyncio.wait_for(ready, timeout)
    finally:
        loop.remove_reader(fd)


async def read_header_before_tls(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    settings: ProxyProtocolSettings,
    timeout: float,
) -> ProxyHeader | None:
    """The header (None: absent, optional mode); raises ProxyRefused."""
    try:
        peer_ip = sock.getpeername()[0]
    except OSError as exc:
        raise ProxyRefused("malformed", f"no peer: {exc}") from None
    trusted = settings.trusts(peer_ip)
    if not settings.optional and not trusted:
        raise ProxyRefused("untrusted", "a peer outside trustedSources")
    deadline = loop.time() + timeout
    while True:
        try:
            data = sock.recv(DEFAULT_MAX_LENGTH, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError as exc:
            raise ProxyRefused("malformed", f"read failed: {exc}") from None
        if data == b"":
            raise ProxyRefused("malformed", "closed before a complete header")
        if data:
            if settings.optional and looks_like_proxy_header(data) is False:
                return None
            try:
                result = parse_proxy_header(data, versions=settings.versions)
            except ProxyProtocolError as exc:
                missing = exc.reason == "no PROXY protocol signature"
                raise ProxyRefused("missing" if missing else "malformed", exc.reason) from None
            if result is not None:
                header, used = result
                if not trusted:
                    raise ProxyRefused("untrusted", "a PROXY header from outside trustedSources")
                sock.recv(used)  # exactly the header: it was peeked, so it is all there
                return header
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise ProxyRefused("timeout", "no complete header in headerReadTimeout")
        if data:
            await asyncio.sleep(min(_REPEEK, remaining))  # part of it: the rest is to come
        else:
            try:
                await _readable(loop, sock, remaining)
            except TimeoutError:
                raise ProxyRefused("timeout", "no complete header in headerReadTimeout") from None
