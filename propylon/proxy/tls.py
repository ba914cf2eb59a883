"""TLS for listeners (termination, SNI, mTLS). Upstream connections' contexts (origination)
are ``propylon.net.tls.client_context``.

Server contexts follow Mozilla's "intermediate" profile, which Python's defaults do not meet:
TLS 1.2 minimum, AEAD ECDHE suites only for TLS 1.2 (TLS 1.3 suites are all AEAD), no
compression, no renegotiation, ALPN ``h2`` (unless the listener turns HTTP/2 off) and
``http/1.1``, and key exchange groups limited to the profile's curves.

A listener with several certificates picks one by SNI (exact name, then wildcard, else the
first certificate). Each certificate's names are kept so a request whose Host is not served by
the certificate its connection negotiated can be answered 421 (a client reusing a connection
for another origin). Certificate files are watched: ``ServerTLS.reload_if_changed`` rebuilds
the contexts when a file changes, so new handshakes use the new certificate without a restart.
A certificate given inline (from a Kubernetes Secret) is loaded through private files that
exist only while it loads (``pem_files.py``); a change of it is a new IR version.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import ssl
from collections.abc import Callable
from typing import Any

from propylon.ir import CertificateIR, ListenerIR, ListenerTLSIR
from propylon.proxy.pem_files import pem_files
from propylon.runtime.compiled import HostSet

log = logging.getLogger("propylon.tls")

# Mozilla intermediate (v5.7) TLS 1.2 suites, without the DHE ones (no DH parameters needed).
INTERMEDIATE_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
# The profile allows X25519, P-256 and P-384; Python 3.11 can only pin a single group, and
# P-256 is the one every client supports.
_ECDH_CURVE = "prime256v1"


def intermediate_server_context(http2: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(INTERMEDIATE_CIPHERS)
    ctx.set_ecdh_curve(_ECDH_CURVE)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE  # the profile lets clients choose
    ctx.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    return ctx


def certificate_names(cert_file: str) -> list[str]:
    """The DNS names a certificate is valid for (its SANs, else its common name)."""
    decoded: dict[str, Any] = ssl._ssl._test_decode_cert(cert_file)  # type: ignore[attr-defined]
    names = [v.lower() for k, v in decoded.get("subjectAltName", ()) if k == "DNS"]
    if not names:
        for rdn in decoded.get("subject", ()):
            names += [v.lower() for k, v in rdn if k == "commonName"]
    return names


class ServerTLS:
    """The contexts of one HTTPS listener and the names each certificate serves."""

    def __init__(self, spec: ListenerTLSIR, http2: bool = False) -> None:
        self.spec = spec
        self.http2 = http2  # ALPN offers h2 before http/1.1
        self._mtimes: dict[str, float] = {}
        self.default: ssl.SSLContext = self._build()

    def _build(self) -> ssl.SSLContext:
        contexts: list[tuple[ssl.SSLContext, list[str]]] = []
        for index, cert in enumerate(self.spec.certificates):
            ctx = intermediate_server_context(self.http2)
            try:
                names = _load_certificate(ctx, cert)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"tls.certificates[{index}]: cannot load {_certificate_files(cert)}: "
                    f"{_reason(exc)}") from exc
            if self.spec.client_auth != "none" and self.spec.client_ca_file:
                try:
                    ctx.load_verify_locations(self.spec.client_ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise ValueError(
                        f"tls.clientValidation.caFile: cannot load "
                        f"{self.spec.client_ca_file!r}: {_reason(exc)}") from exc
                ctx.verify_mode = (
                    ssl.CERT_REQUIRED if self.spec.client_auth == "required" else ssl.CERT_OPTIONAL
                )
            contexts.append((ctx, names))
        self._mtimes = self._file_mtimes()
        exact: dict[str, ssl.SSLContext] = {}
        wildcard: dict[str, ssl.SSLContext] = {}
        self.names_of: dict[int, HostSet] = {}
        for ctx, names in contexts:
            self.names_of[id(ctx)] = HostSet(tuple(names))
            for name in names:
                table = wildcard if name.startswith("*.") else exact
                table.setdefault(name[2:] if name.startswith("*.") else name, ctx)
        default = contexts[0][0]

        def choose(sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
            if not server_name:
                return
            name = server_name.lower()
            ctx = exact.get(name) or wildcard.get(name.partition(".")[2])
            if ctx is not None and ctx is not default:
                sslobj.context = ctx

        for ctx, _ in contexts:
            ctx.sni_callback = choose
        return default

    def _file_mtimes(self) -> dict[str, float]:
        files = [f for c in self.spec.certificates for f in (c.cert_file, c.key_file) if f]
        if self.spec.client_ca_file:
            files.append(self.spec.client_ca_file)
        mtimes = {}
        for path in files:
            with contextlib.suppress(OSError):
                mtimes[path] = os.stat(path).st_mtime
        return mtimes

    def reload_if_changed(self) -> bool:
        """Rebuild the contexts if a certificate, key or CA file changed; True if rebuilt."""
        if self._file_mtimes() == self._mtimes:
            return False
        try:
            self.default = self._build()
        except ValueError as exc:
            log.error("certificate files changed but cannot be loaded, keeping the old ones: %s",
                      exc)
            self._mtimes = self._file_mtimes()
            return False
        log.info("reloaded certificates: %s",
                 ", ".join(c.cert_file or c.source for c in self.spec.certificates))
        return True

    def served_names(self, sslobj: Any) -> HostSet | None:
        """The names of the certificate a connection negotiated."""
        ctx = getattr(sslobj, "context", None)
        return self.names_of.get(id(ctx)) if ctx is not None else None


def listener_tls(gateway: str, listener: ListenerIR,
                 build: Callable[[ListenerTLSIR, bool], ServerTLS] | None = None
                 ) -> ServerTLS | None:
    """The TLS of ``listener`` of Gateway ``gateway`` (None for plain HTTP), made by
    ``build`` (a new ``ServerTLS`` unless given); ``ValueError`` naming the Gateway, the
    listener and the file when its files cannot be loaded."""
    if listener.tls is None:
        return None
    try:
        return (build or ServerTLS)(listener.tls, listener.http2)
    except ValueError as exc:
        raise ValueError(f"Gateway {gateway} listener {listener.name} "
                         f"({listener.address}:{listener.port}): {exc}") from exc


def _certificate_files(cert: CertificateIR) -> str:
    if cert.private_key:
        return f"the certificate of {cert.source or 'a Secret'}"
    return f"certFile {cert.cert_file!r} / keyFile {cert.key_file!r}"


def _reason(exc: Exception) -> str:
    """ssl's errors say "[SSL] PEM lib (_ssl.c:3905)" for a file that is not PEM (or a key
    that is not the certificate's), and its file errors carry no file name, only errno
    text."""
    if isinstance(exc, ssl.SSLError) and "PEM lib" in str(exc):
        return "not a PEM certificate with its private key"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _load_certificate(ctx: ssl.SSLContext, cert: CertificateIR) -> list[str]:
    """Load ``cert`` into ``ctx``; the names it serves."""
    if not cert.private_key:
        ctx.load_cert_chain(cert.cert_file, cert.key_file)
        return certificate_names(cert.cert_file)
    with pem_files(cert.certificate_pem, cert.private_key) as (cert_file, key_file):
        ctx.load_cert_chain(cert_file, key_file)
        return certificate_names(cert_file)


_RFC4514_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}


def _rfc4514_escape(value: str) -> str:
    for char in '\\,+"<>;=':
        value = value.replace(char, "\\" + char)
    return value


def client_certificate_header(sslobj: Any) -> bytes | None:
    """An x-forwarded-client-cert value (Envoy's format) for a verified client certificate."""
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    if not der:
        return None
    cert = sslobj.getpeercert() or {}
    parts = [b"Hash=" + hashlib.sha256(der).hexdigest().encode()]
    subject = ",".join(  # RFC 4514: most specific first, short attribute names
        f"{_RFC4514_NAMES.get(k, k)}={_rfc4514_escape(v)}"
        for rdn in reversed(cert.get("subject", ())) for k, v in rdn
    )
    if subject:
        parts.append(b'Subject="' + subject.replace('"', '\\"').encode("latin-1") + b'"')
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "URI":
            parts.append(b"URI=" + value.encode("latin-1"))
        elif kind == "DNS":
            parts.append(b"DNS=" + value.encode("latin-1"))
    return b";".join(parts)
