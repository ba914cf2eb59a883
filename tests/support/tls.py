"""Test certificates (trustme), a raw HTTP/1.1 client over TLS, and a TLS upstream.

``Pki`` is one trustme CA that writes PEM files into a directory: server certificates for
listeners, client certificates for mTLS. ``TLSRawClient`` is ``RawClient`` with the socket
wrapped after connecting (SNI, client certificate, version bounds). ``TLSUpstream`` is a
``ScriptedUpstream`` served over TLS, optionally requiring a client certificate.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
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
