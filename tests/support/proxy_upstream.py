"""An upstream that expects a PROXY protocol header before HTTP (as HAProxy's accept-proxy):
it records the header of each connection, then serves HTTP like ``ScriptedUpstream``."""

from __future__ import annotations

import asyncio

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
        header_reader = ProxyHeaderReader()
        try:
            for _ in range(4096):  # a byte at a time: nothing of HTTP is read here
                byte = await reader.read(1)
                if not byte:
                    raise ProxyProtocolError("connection closed before a header")
                result = header_reader.feed(byte)
                if isinstance(result, Parsed):
                    break
            else:
                raise ProxyProtocolError("no header in 4096 bytes")
        except ProxyProtocolError:
            with self._lock:
                self.refused += 1
            writer.close()
            return
        with self._lock:
            self.headers.append(result.header)
        await super()._serve(reader, writer)
