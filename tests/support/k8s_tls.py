"""Self-signed certificates (``cryptography``) as Kubernetes ``kubernetes.io/tls`` Secrets, and
the certificate a TLS listener serves for a server name."""

from __future__ import annotations

import base64
import datetime
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class SelfSigned:
    cert_pem: bytes
    key_pem: bytes
    der: bytes  # what a client receives


def self_signed(*names: str) -> SelfSigned:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return SelfSigned(cert.public_bytes(serialization.Encoding.PEM),
                      key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()),
                      cert.public_bytes(serialization.Encoding.DER))


def tls_secret(name: str, namespace: str, cert: SelfSigned, *, string_data: bool = False,
               **changes: Any) -> dict[str, Any]:
    """A Secret as ``kubectl get secret -o yaml`` shows it (``data`` base64), or with
    ``stringData``; ``changes`` replace top-level fields."""
    if string_data:
        values: dict[str, Any] = {"stringData": {"tls.crt": cert.cert_pem.decode(),
                                                 "tls.key": cert.key_pem.decode()}}
    else:
        values = {"data": {"tls.crt": base64.b64encode(cert.cert_pem).decode(),
                           "tls.key": base64.b64encode(cert.key_pem).decode()}}
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "kubernetes.io/tls", **values, **changes}


def served_certificate(port: int, server_name: str, timeout: float = 5.0) -> bytes:
    """The DER certificate the listener on 127.0.0.1:``port`` presents for ``server_name``."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw, \
            ctx.wrap_socket(raw, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def https_get(port: int, host: str, path: str = "/", timeout: float = 5.0) -> tuple[int, bytes]:
    """GET over TLS (SNI and Host ``host``, the certificate not verified): status and body."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(f"GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body
