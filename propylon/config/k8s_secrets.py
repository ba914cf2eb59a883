"""Certificates from Kubernetes ``kubernetes.io/tls`` Secrets, for the HTTPS listeners of
Gateway API Gateways (``tls.certificateRefs``) and the ``spec.tls`` of Ingresses.

A Secret of ``type: kubernetes.io/tls`` holds ``tls.crt`` (the chain, leaf first) and
``tls.key`` (the leaf's private key), base64 in ``data`` or as text in ``stringData`` (which
wins key by key, as the API server merges it). ``SecretCertificates.resolve`` reads one and
checks it here, at conversion, so ``propylon validate`` and the control plane report a bad one
before any proxy sees it: both values decode, the chain parses as X.509 PEM, the key as an
unencrypted PEM private key, and the key is the leaf certificate's. The PEM it gives becomes
an ``InlineCertificate`` of the converted Gateway's listener, then inline PEM in the IR
(``CertificateIR``), which workers load through private files (``proxy/pem_files.py``).

A reference that cannot be used is a ``ResolvedRefs=False`` condition: ``RefNotPermitted``
for a Secret of another namespace that no ReferenceGrant there opens to the referring kind,
``InvalidCertificateRef`` for the rest (no such Secret, another kind or type, a value that
does not decode or parse, a key of another certificate). Messages name the Secret and the
field, never its content; parsers' own messages are not passed on, as they may quote it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from propylon.config.gateway import InlineCertificate
from propylon.config.k8s_backends import BackendResolver, ObjectFieldError
from propylon.config.k8s_fields import FieldError, text
from propylon.config.k8s_status import RESOLVED_REFS, Condition
from propylon.config.kubernetes import KubernetesObject

TLS_SECRET_TYPE = "kubernetes.io/tls"
CERT_KEY, KEY_KEY = "tls.crt", "tls.key"
INVALID_REF, NOT_PERMITTED = "InvalidCertificateRef", "RefNotPermitted"


class _Unusable(ValueError):
    """A Secret that cannot give a certificate; the message names the field, not the value."""


@dataclass
class SecretCertificates:
    """Looks certificate references up among the Secrets of the inputs; each Secret is read
    and checked once per conversion."""

    secrets: dict[str, KubernetesObject]  # by namespace/name
    grants: BackendResolver  # ReferenceGrants, shared with backend references
    _read: dict[str, InlineCertificate | Condition] = field(default_factory=dict)

    @classmethod
    def of(cls, objects: Iterable[KubernetesObject], grants: BackendResolver
           ) -> SecretCertificates:
        return cls({o.key: o for o in objects if o.kind == "Secret"}, grants)

    def resolve(self, ref: dict[str, Any], at: str, from_kind: str,
                from_namespace: str) -> InlineCertificate | Condition:
        """The certificate ``ref`` (at ``at``) names, or why it cannot be used; a
        ``FieldError`` when a field of the reference has the wrong type."""
        name = text(ref, "name", at)
        group = text(ref, "group", at) or ""
        kind = text(ref, "kind", at) or "Secret"
        namespace = text(ref, "namespace", at) or from_namespace
        if (group, kind) not in (("", "Secret"), ("core", "Secret")):
            return _invalid(f"certificate reference kind {group or 'core'}/{kind} is not "
                            "supported (Secret)")
        if not name:
            return _invalid("a certificate reference needs a name")
        if namespace != from_namespace:
            refused = self._refused(from_kind, from_namespace, namespace, name)
            if refused is not None:
                return refused
        key = f"{namespace}/{name}"
        found = self._read.get(key)
        if found is None:
            found = self._read[key] = self._certificate(key)
        return found

    def _refused(self, from_kind: str, from_namespace: str, namespace: str,
                 name: str) -> Condition | None:
        """Why a reference to Secret ``namespace/name`` is not permitted, or None."""
        try:
            if self.grants.granted(from_kind, from_namespace, namespace, name, "Secret"):
                return None
            message = f"no ReferenceGrant in {namespace} allows {from_kind} from {from_namespace}"
        except ObjectFieldError as exc:
            message = str(exc)
        return Condition(RESOLVED_REFS, False, NOT_PERMITTED,
                         f"Secret {namespace}/{name}: {message}")

    def _certificate(self, key: str) -> InlineCertificate | Condition:
        secret = self.secrets.get(key)
        if secret is None:
            return _invalid(f"Secret {key} not found in the inputs")
        try:
            return read_tls_secret(secret)
        except (_Unusable, FieldError) as exc:
            return _invalid(f"Secret {key}: {exc.text if isinstance(exc, FieldError) else exc}")


def read_tls_secret(secret: KubernetesObject) -> InlineCertificate:
    """The checked certificate of a ``kubernetes.io/tls`` Secret; ``_Unusable`` (or a
    ``FieldError``) saying which field is wrong."""
    body = secret.body
    kind = text(body, "type", "")
    if kind != TLS_SECRET_TYPE:
        raise _Unusable(f"type is {kind!r}, not {TLS_SECRET_TYPE!r}")
    chain = _value(body, CERT_KEY)
    private_key = _value(body, KEY_KEY)
    _check_pair(chain, private_key)
    return InlineCertificate(chain, private_key, f"Secret {secret.key}")


def _value(body: dict[str, Any], name: str) -> str:
    """``stringData[name]``, else ``data[name]`` decoded from base64, as PEM text."""
    for section in ("stringData", "data"):
        values = body.get(section)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise _Unusable(f"{section} must be a mapping, not {_shape(values)}")
        value = values.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise _Unusable(f"{section}.{name} must be a string, not {_shape(value)}")
        raw = value.encode() if section == "stringData" else _base64(value, f"data.{name}")
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise _Unusable(f"{section}.{name} is not PEM text") from None
    raise _Unusable(f"data.{name} is missing")


def _base64(value: str, where: str) -> bytes:
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _Unusable(f"{where} is not valid base64") from None


def _check_pair(chain: str, private_key: str) -> None:
    from cryptography import x509  # loads when a Secret's TLS pair is first checked
    from cryptography.hazmat.primitives import serialization

    try:
        certificates = x509.load_pem_x509_certificates(chain.encode())
    except ValueError:
        raise _Unusable(f"{CERT_KEY} is not a PEM certificate chain") from None
    try:
        key = serialization.load_pem_private_key(private_key.encode(), password=None)
    except (ValueError, TypeError):  # TypeError: encrypted
        raise _Unusable(f"{KEY_KEY} is not an unencrypted PEM private key") from None
    except Exception:  # cryptography's UnsupportedAlgorithm
        raise _Unusable(f"{KEY_KEY} is a key of an unsupported algorithm") from None
    if _public(certificates[0].public_key()) != _public(key.public_key()):
        raise _Unusable(f"{KEY_KEY} is not the key of the first certificate of {CERT_KEY}")


def _public(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo))


def _shape(value: Any) -> str:
    """What a value is, without showing it (it may be key material)."""
    if value is None:
        return "null"
    return _SHAPES.get(type(value), type(value).__name__)


_SHAPES = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
           int: "an integer", float: "a number"}


def _invalid(message: str) -> Condition:
    return Condition(RESOLVED_REFS, False, INVALID_REF, message)
