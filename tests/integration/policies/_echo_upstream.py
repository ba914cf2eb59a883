"""A keep-alive HTTP/1.1 upstream that answers every request with its head as JSON.

Run as ``python _echo_upstream.py PORT``. Body: ``{"method", "target", "headers": [[n, v]]}``.
"""

from __future__ import annotations

import asyncio
import json
import sys


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = [line.split(":", 1) for line in lines[1:] if line]
            headers = [[n.strip().lower(), v.strip()] for n, v in headers]
            length = next((int(v) for n, v in headers if n == "content-length"), 0)
            if length:
                await reader.readexactly(length)
            elif any(n == "transfer-encoding" for n, _ in headers):
                await read_chunked(reader)  # the whole body, as a server does, then answer
            body = json.dumps({"method": method, "target": target, "headers": headers}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def read_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
            return
        await reader.readexactly(size + 2)


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main(int(sys.argv[1])))
    except KeyboardInterrupt:
        pass
