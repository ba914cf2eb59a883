"""TLS settings of extAuth and jwt JWKS: validation, path resolution, compile-time CA loading,
and the filters' HTTP client against a real TLS server on 127.0.0.1 (trustme CA)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from propylon.config import load_paths, load_text
from propylon.config.policy import PolicyItem
from propylon.filters import FilterEnv, build_filter
from propylon.ir import PolicyIR
from propylon.net.httpclient import HttpClient, HttpError
from propylon.net.tls import tls_context
from propylon.translate import translate
from tests.support.applied import applied
from tests.support.tls import Pki
from tests.unit.test_config import doc

GATEWAY = "listeners: [{name: web, port: 8080}]\npolicies: [POLICY]"


def errors(policy: str) -> list[tuple[str | None, str]]:
    text = doc("Gateway", GATEWAY.replace("POLICY", policy))
    return [(e.field, e.message) for e in load_text(text, "g.yaml").errors]


@pytest.mark.parametrize(
    "policy",
    [
        '{extAuth: {url: "https://auth.internal/check", caFile: ca.pem}}',
        '{extAuth: {url: "https://auth.internal/check"}}',
        '{jwt: {jwks: {url: "https://idp.internal/jwks.json", caFile: ca.pem}}}',
    ],
)
def test_https_services_are_accepted(policy: str) -> None:
    assert errors(policy) == []


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ('{extAuth: {url: "http://auth/check", caFile: ca.pem}}',
         "spec.policies[0].extAuth.caFile"),
        ('{jwt: {jwks: {url: "http://idp/k", caFile: ca.pem}}}',
         "spec.policies[0].jwt.jwks.caFile"),
    ],
)
def test_ca_file_needs_an_https_url(policy: str, field: str) -> None:
    assert errors(policy) == [(field, "caFile is only used with an https:// url")]


def test_ca_files_are_relative_to_the_yaml_file(tmp_path: Path) -> None:
    gateway = GATEWAY.replace("POLICY", '{extAuth: {url: "https://a/", caFile: certs/ca.pem}}')
    route = ('rules: [{directResponse: {status: 200}, policies: [{jwt: {jwks: '
             '{url: "https://b/k", caFile: /abs/ca.pem}}}]}]')
    (tmp_path / "gw.yaml").write_text(doc("Gateway", gateway) + "\n---\n" + doc("Route", route))
    result = load_paths([tmp_path])
    assert result.errors == []
    gateway = translate(result.resources).gateways[0]
    specs = {p.type: p.spec for rule in gateway.rules for p in applied(gateway, rule)}
    assert specs["extAuth"]["caFile"] == str(tmp_path / "certs/ca.pem")
    assert specs["jwt"]["jwks"]["caFile"] == "/abs/ca.pem"


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"extAuth": {"url": "https://127.0.0.1:1/", "caFile": "CA"}}, "extAuth.caFile"),
        ({"jwt": {"jwks": {"url": "https://127.0.0.1:1/k", "caFile": "CA"}}}, "jwt.jwks.caFile"),
    ],
)
@pytest.mark.parametrize("ca", ["missing.pem", "garbage.pem"])
def test_unloadable_ca_file_fails_compilation_naming_the_field(
    tmp_path: Path, section: dict, field: str, ca: str
) -> None:
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    path = str(tmp_path / ca)
    kind = next(iter(section))
    spec = PolicyItem.model_validate(section).model_dump(mode="json", by_alias=True)[kind]
    (spec if kind == "extAuth" else spec["jwks"])["caFile"] = path
    with pytest.raises(ValueError, match=rf'Route a: {field}: cannot load CA file "{path}"'):
        build_filter(PolicyIR(kind, spec, "Route a"), FilterEnv(None))


# -- the client over TLS ----------------------------------------------------------------------


class TlsServer:
    """An asyncio HTTP/1.1 server over TLS answering 200 "ok" (keep-alive) to every request;
    records the SNI of each handshake and the number of connections."""

    def __init__(self, pki: Pki) -> None:
        cert = pki.issue("srv", "localhost", "127.0.0.1")
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert.cert), str(cert.key))
        self.context.sni_callback = self._sni  # type: ignore[assignment]
        self.names: list[str | None] = []
        self.connections = 0
        self.port = 0
        self.server: asyncio.AbstractServer | None = None

    def _sni(self, _obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.names.append(name)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.transport.abort()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


def run_client(tmp_path: Path, ca_of: str, host: str) -> tuple[list[object], TlsServer]:
    pki, stranger = Pki(tmp_path / "a"), Pki(tmp_path / "b", "Other CA")
    server = TlsServer(pki)

    async def scenario() -> list[object]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda *_: None)  # refused handshakes are expected here
        await server.start()
        ca = pki.ca_file if ca_of == "ours" else stranger.ca_file
        client = HttpClient(f"https://{host}:{server.port}", 4, tls_context(str(ca)))
        results: list[object] = []
        for _ in range(3):
            try:
                resp = await client.request(b"GET", b"/", [], timeout=5.0)
                results.append((resp.status, resp.body))
            except HttpError as exc:
                results.append(str(exc))
        client.close()
        await server.stop()
        return results

    return asyncio.run(scenario()), server


def test_client_tls_sni_verification_and_keep_alive(tmp_path: Path) -> None:
    results, server = run_client(tmp_path, "ours", "localhost")
    assert results == [(200, b"ok")] * 3
    assert server.connections == 1  # one TLS connection kept alive for all three
    assert server.names == ["localhost"]  # SNI is the URL's host


def test_client_tls_ip_url_verified_against_ip_san(tmp_path: Path) -> None:
    results, server = run_client(tmp_path, "ours", "127.0.0.1")
    assert results == [(200, b"ok")] * 3
    assert server.names == [None]  # no SNI for an IP address (RFC 6066)


def test_client_tls_wrong_ca_is_an_http_error(tmp_path: Path) -> None:
    results, _ = run_client(tmp_path, "stranger", "localhost")
    assert len(results) == 3
    assert all(isinstance(r, str) and "CERTIFICATE_VERIFY_FAILED" in r for r in results)
