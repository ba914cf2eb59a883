"""A ``ScriptedUpstream`` that also counts every byte it receives, parseable or not.

The desync tests need "the upstream saw nothing" to mean exactly that: not "no request could
be parsed", which a half-forwarded or garbled head would also give.
"""

from __future__ import annotations

import asyncio
import threading

from tests.support.h1 import MAX_HEAD
from tests.support.upstream import ScriptedUpstream


class _CountingReader(asyncio.StreamReader):
    def __init__(self, owner: RecordingUpstream) -> None:
        super().__init__(limit=MAX_HEAD)
        self._owner = owner

    def feed_data(self, data: bytes) -> None:
        self._owner.add_received(data)
        super().feed_data(data)


class RecordingUpstream(ScriptedUpstream):
    """``received`` holds every byte read from any connection since the last ``reset``."""

    def __init__(self, name: str = "up") -> None:
        super().__init__(name)
        self._received = bytearray()
        self._received_lock = threading.Lock()

    def add_received(self, data: bytes) -> None:
        with self._received_lock:
            self._received += data

    @property
    def received(self) -> bytes:
        with self._received_lock:
            return bytes(self._received)

    def reset(self, handler=None) -> None:  # type: ignore[no-untyped-def]
        super().reset(handler)
        with self._received_lock:
            self._received.clear()

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.StreamReaderProtocol:
            return asyncio.StreamReaderProtocol(_CountingReader(self), self._serve)

        self._server = await loop.create_server(factory, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
