"""A tiny HTTP/1.1 echo service for the quickstart and the tests.

Answers every request with a JSON document describing what it received (method, target,
headers, body size and the service's name), so a user can see what the gateway forwarded.
Special paths: ``/status/NNN`` answers that status; ``/delay/SECONDS`` waits first;
``/bytes/N`` answers N bytes (chunked if ``?chunked=1``).

    python -m propylon.demo.echo_server --port 9001 --name demo-a
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

import httptools


class EchoProtocol(asyncio.Protocol):
    def __init__(self, name: str) -> None:
        self.name = name
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body_size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body_size = b"", [], 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)

    def on_message_complete(self) -> None:
        path = self.url.split(b"?")[0].decode("latin-1")
        keep_alive = self.parser.should_keep_alive()
        method = self.parser.get_method().decode()
        if path.startswith("/delay/"):
            delay = float(path.split("/")[2])
            asyncio.get_running_loop().call_later(delay, self.respond, method, path, keep_alive)
        else:
            self.respond(method, path, keep_alive)

    def respond(self, method: str, path: str, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        status = int(path.split("/")[2]) if path.startswith("/status/") else 200
        if path.startswith("/bytes/"):
            size = int(path.split("/")[2])
            body = b"x" * size
        else:
            body = json.dumps({
                "service": self.name,
                "method": method,
                "url": self.url.decode("latin-1"),
                "headers": self.headers,
                "body_size": self.body_size,
            }).encode() + b"\n"
        head = [b"HTTP/1.1 %d X\r\n" % status]
        if b"chunked=1" in self.url:
            head.append(b"transfer-encoding: chunked\r\n")
            framed = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
        else:
            head.append(b"content-length: %d\r\n" % len(body))
            framed = body
        head.append(b"content-type: application/json\r\n")
        head.append(b"x-service: " + self.name.encode() + b"\r\n")
        if not keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        no_body = method == "HEAD" or status in (204, 304)
        self.transport.write(b"".join(head) + (b"" if no_body else framed))
        if not keep_alive:
            self.transport.close()


async def serve(host: str, port: int, name: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: EchoProtocol(name), host, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--name", default="echo")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.name))


if __name__ == "__main__":
    main()
