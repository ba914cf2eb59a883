"""Test certificates (trustme), a raw HTTP/1.1 client over TLS, and a TLS upstream.

``Pki`` is one trustme CA that writes PEM files into a directory: server certificates for
listeners, client certificates for mTLS. ``TLSRawClient`` is ``RawClient`` with the socket
wrapped after connecting (SNI, client certificate, version bounds). ``TLSUpstream`` is a
``ScriptedUpstream`` served over TLS, optionally requiring a client certificate;
``SlowHandshakeUpstream`` one whose first connections take a while to open.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.support.client import RawClient
from tests.support.h1 import MAX_HEAD
from tests.support.upstream import ScriptedUpstream


@dataclass
class CertFiles:
    cert: Path  # leaf then chain, PEM
    key: Path
    der: bytes  # the leaf certificate, DER

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


class Pki:
    """One CA; ``issue`` writes ``<stem>.pem`` and ``<stem>.key`` into ``directory``."""

    def __init__(self, directory: Path, organization: str = "Propylon test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name=organization)
        self.ca_file = directory / f"ca-{id(self)}.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def issue(self, stem: str, *names: str, common_name: str | None = None) -> CertFiles:
        leaf = self.ca.issue_cert(*names, common_name=common_name)
        files = CertFiles(self.directory / f"{stem}.pem", self.directory / f"{stem}.key",
                          _der(leaf.cert_chain_pems[0].bytes()))
        self.write(leaf, files)
        return files

    def reissue(self, files: CertFiles, *names: str) -> CertFiles:
        """New certificate and key for ``names`` written over ``files`` (atomically each)."""
        leaf = self.ca.issue_cert(*names)
        out = CertFiles(files.cert, files.key, _der(leaf.cert_chain_pems[0].bytes()))
        self.write(leaf, out)
        return out

    @staticmethod
    def write(leaf: trustme.LeafCert, files: CertFiles) -> None:
        for pem, path in ((leaf.private_key_pem, files.key),
                          (None, files.cert)):
            tmp = path.with_suffix(path.suffix + ".tmp")
            if pem is not None:
                pem.write_to_path(str(tmp))
            else:
                tmp.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
            tmp.replace(path)

    def client_context(
        self,
        client: CertFiles | None = None,
        minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
        maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
    ) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.minimum_version = minimum
        ctx.maximum_version = maximum
        ctx.set_alpn_protocols(["http/1.1"])
        if client is not None:
            ctx.load_cert_chain(str(client.cert), str(client.key))
        return ctx


def _der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))


class TLSRawClient(RawClient):
    """A ``RawClient`` whose connection is TLS; the handshake happens in the constructor."""

    def __init__(
        self,
        port: int,
        context: ssl.SSLContext,
        server_name: str | None,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(port, timeout=timeout)
        self.sock = context.wrap_socket(self.sock, server_hostname=server_name)

    @property
    def tls(self) -> ssl.SSLSocket:
        assert isinstance(self.sock, ssl.SSLSocket)
        return self.sock

    def peer_der(self) -> bytes:
        der = self.tls.getpeercert(binary_form=True)
        assert der is not None
        return der


class TLSUpstream(ScriptedUpstream):
    """A scripted upstream behind TLS with ``server`` as its certificate; ``client_ca`` makes a
    client certificate from that CA mandatory."""

    def __init__(self, name: str, server: CertFiles, client_ca: Path | None = None) -> None:
        super().__init__(name)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(server.cert), str(server.key))
        if client_ca is not None:
            self.context.load_verify_locations(str(client_ca))
            self.context.verify_mode = ssl.CERT_REQUIRED
        self.handshake_failures = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def _start(self) -> None:
        self.loop.set_exception_handler(self._on_loop_error)
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", 0, limit=MAX_HEAD, ssl=self.context
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        await super()._serve(reader, writer)

    async def _stop(self) -> None:
        await super()._stop()
        for writer in self._writers:  # a TLS close waits for close_notify: abort instead
            writer.transport.abort()
        await asyncio.sleep(0.05)  # let the aborted transports finish closing

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if isinstance(context.get("exception"), ssl.SSLError | ConnectionError):
            self.handshake_failures += 1  # refused handshakes are the point of some tests
            return
        loop.default_exception_handler(context)


class SlowHandshakeUpstream(TLSUpstream):
    """A ``TLSUpstream`` that accepts each connection at once but reads nothing of it, so its
    TLS handshake waits, for ``handshake_delays`` seconds (one delay per connection, in order;
    none once they are used up): an upstream connection still being opened that long.
    ``connections`` counts the connections whose handshake completed."""

    def __init__(self, name: str, server: CertFiles, handshake_delays: list[float]) -> None:
        super().__init__(name, server)
        self.handshake_delays = deque(handshake_delays)

    async def _start(self) -> None:
        self.loop.set_exception_handler(self._on_loop_error)
        self._server = await self.loop.create_server(
            lambda: _HeldHandshake(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handshake_then_serve(self, transport: asyncio.BaseTransport) -> None:
        delay = self.handshake_delays.popleft() if self.handshake_delays else 0.0
        reader = asyncio.StreamReader(limit=MAX_HEAD)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            await asyncio.sleep(delay)
            tls = await self.loop.start_tls(transport, protocol, self.context,  # type: ignore[arg-type]
                                            server_side=True)
        except (ssl.SSLError, ConnectionError, asyncio.CancelledError):
            self.handshake_failures += 1
            transport.abort()  # type: ignore[attr-defined]
            return
        assert tls is not None
        protocol.connection_made(tls)  # start_tls does not call it
        await self._serve(reader, asyncio.StreamWriter(tls, protocol, reader, self.loop))


class _HeldHandshake(asyncio.Protocol):
    """A connection of a ``SlowHandshakeUpstream`` until its handshake may start."""

    def __init__(self, upstream: SlowHandshakeUpstream) -> None:
        self.upstream = upstream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.pause_reading()  # type: ignore[attr-defined]  # the ClientHello waits
        task = asyncio.ensure_future(self.upstream._handshake_then_serve(transport))
        self.upstream._tasks.add(task)  # cancelled on stop, if still held
        task.add_done_callback(self.upstream._tasks.discard)
