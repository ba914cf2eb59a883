"""A TLS echo service (stdlib only), for the egress and mesh-edge end-to-end tests.

    python -m tests.support.tls_echo --host H --port P --cert C --key K --name N [--client-ca CA]

Answers each HTTP/1.1 request (keep-alive) with JSON: service name, method, target, the headers
it received and the verified client certificate's subject (``null`` without one). The value of
``authorization`` is never echoed: it is replaced by ``sha256:<hex>`` of the value, so a test
can check which credential arrived without the credential ever being in an answer. With
``--client-ca`` a client certificate signed by that CA is required (mesh service).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import ssl


async def serve_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       name: str) -> None:
    peer = writer.get_extra_info("peercert")
    subject = None
    if peer:
        subject = ",".join(f"{k}={v}" for rdn in peer.get("subject", ()) for k, v in rdn)
    try:
        while True:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = []
            length = 0
            for line in lines[1:]:
                if not line:
                    continue
                k, _, v = line.partition(":")
                k, v = k.strip(), v.strip()
                if k.lower() == "content-length":
                    length = int(v)
                if k.lower() == "authorization":
                    v = "sha256:" + hashlib.sha256(v.encode("latin-1")).hexdigest()
                headers.append([k, v])
            if length:
                await reader.readexactly(length)
            body = json.dumps({"service": name, "method": method, "url": target,
                               "headers": headers, "client_cert": subject}).encode() + b"\n"
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
            TimeoutError, ssl.SSLError, ValueError):
        pass
    finally:
        writer.transport.abort()


async def main_async(args: argparse.Namespace) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    if args.client_ca:
        ctx.load_verify_locations(args.client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, _ctx: None)  # refused handshakes are expected
    server = await asyncio.start_server(
        lambda r, w: serve_client(r, w, args.name), args.host, args.port, ssl=ctx)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--name", default="tls-echo")
    parser.add_argument("--client-ca")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
