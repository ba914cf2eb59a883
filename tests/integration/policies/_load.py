"""A closed-loop HTTP/1.1 load generator (keep-alive, asyncio) that records every answer."""

from __future__ import annotations

import asyncio
import time

REQUEST = b"GET %s HTTP/1.1\r\nhost: load\r\n\r\n"


async def _client(port: int, path: bytes, until: float, out: list[tuple[float, int]]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = REQUEST % path
    try:
        while time.monotonic() < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            out.append((time.monotonic(), status))
    finally:
        writer.close()


async def _run(ports: list[int], path: bytes, connections: int, seconds: float
               ) -> tuple[float, list[tuple[float, int]]]:
    start = time.monotonic()
    out: list[tuple[float, int]] = []
    await asyncio.gather(*(_client(p, path, start + seconds, out)
                           for p in ports for _ in range(connections)))
    return start, out


def load(ports: list[int], path: str, connections: int, seconds: float
         ) -> tuple[float, list[tuple[float, int]]]:
    """(start time, [(answer time, status)]) of ``connections`` per port for ``seconds``."""
    return asyncio.run(_run(ports, path.encode(), connections, seconds))
