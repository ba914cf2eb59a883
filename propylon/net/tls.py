"""TLS client contexts: for the gateway's own calls (extAuth, JWKS, health checks) and for
connections to upstream endpoints (origination, optionally with a client certificate).

Building a context reads files (CAs, certificates): do it when a configuration is compiled,
never per request. A file that cannot be loaded raises ``ValueError`` naming the field.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

from propylon.ir import UpstreamTLSIR


def tls_context(ca_file: str | None = None, alpn: str = "http/1.1") -> ssl.SSLContext:
    """A client context verifying the server against ``ca_file`` (PEM, one or more CAs) or,
    when None, the system's trust store; TLS 1.2 or later, offering ALPN ``alpn``. Raises
    ``OSError``/``ssl.SSLError`` for a missing or unreadable file."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols([alpn])
    return ctx


def compile_tls(url: str, ca_file: str | None, field: str) -> ssl.SSLContext | None:
    """The context for a configured ``url`` (None unless https), built when the configuration
    is compiled; a CA file that cannot be loaded raises ``ValueError`` naming ``field`` (which
    refuses the configuration)."""
    if urlsplit(url).scheme != "https":
        return None
    try:
        return tls_context(ca_file)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ValueError(f'{field}: cannot load CA file "{ca_file}": {exc}') from None


def client_context(spec: UpstreamTLSIR, http2: bool = False) -> ssl.SSLContext:
    """A context for connections to upstream endpoints (server verified, optional client
    certificate for mTLS), offering ALPN ``h2`` alone for an HTTP/2 upstream (RFC 9113 §3.2:
    h2 over TLS is negotiated, never assumed), else ``http/1.1``."""
    try:
        ctx = tls_context(spec.ca_file, "h2" if http2 else "http/1.1")
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"tls.caFile: cannot load {spec.ca_file!r}: {_reason(exc)}") from exc
    if spec.cert_file and spec.key_file:
        try:
            ctx.load_cert_chain(spec.cert_file, spec.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"tls.certFile/keyFile: cannot load {spec.cert_file!r} / {spec.key_file!r}: "
                f"{_reason(exc)}") from exc
    return ctx


def _reason(exc: Exception) -> str:
    """ssl's file errors carry no file name, only errno text ("No such file or directory")."""
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
