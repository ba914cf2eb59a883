"""Resources as the control plane keeps them: plain JSON data plus a store version.

A write is validated with the same pydantic models as YAML files (``config.load_data``);
``metadata.resourceVersion`` and ``metadata.contentHash`` are the control plane's own fields,
removed before validation and added to every answer (a Kubernetes object's resourceVersion
without a contentHash is its API server's: ignored, see ``strip_server_fields``).
``contentHash`` is the hash of the resource's normalized content (defaults filled in), so a
client can tell whether its copy differs even where the answer's secrets are redacted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from propylon.admin.redact import redact
from propylon.config import KINDS, ConfigError, Resource, load_data
from propylon.config.kubernetes import KUBERNETES_KIND_NAMES, is_kubernetes
from propylon.ir.jsontext import json_sorted

# URL kind (lower-case) -> resource kind; the Kubernetes kinds read as input too (a Gateway
# API Gateway is a ``gateway``: one Gateway namespace/name is either kind of Gateway)
KIND_OF_PATH: dict[str, str] = {
    name.lower(): name for name in (*KINDS, *KUBERNETES_KIND_NAMES)}
SERVER_FIELDS = ("resourceVersion", "contentHash")


@dataclass(frozen=True, slots=True)
class StoredResource:
    kind: str  # "Route"
    namespace: str
    name: str
    data: dict[str, Any]  # as written, without the server fields
    version: str  # the store's resourceVersion

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class DecodedData:
    """The decoded data of a store's resources, kept while their version stays the same: a
    listing decoded every resource's JSON again on each change (a tenth of what a change cost
    the control plane at 1,000 Routes). The dictionaries it hands out are shared by every
    listing since: read them, never change them (``answer`` copies before adding fields)."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str, str], tuple[str, dict[str, Any]]] = {}

    def item(self, kind: str, namespace: str, name: str, version: str, text: str | bytes
             ) -> StoredResource:
        key = (kind, namespace, name)
        known = self._by_key.get(key)
        if known is None or known[0] != version:
            known = self._by_key[key] = (version, json.loads(text))
        return StoredResource(kind, namespace, name, known[1], version)

    def forget(self, keys: Iterable[tuple[str, str, str]]) -> None:
        """Drop deleted resources (kind, namespace, name)."""
        for key in keys:
            self._by_key.pop(key, None)

    def keep_only(self, items: list[StoredResource]) -> None:
        """After a listing of every resource: forget the ones no longer stored."""
        listed = {(item.kind, item.namespace, item.name) for item in items}
        for gone in self._by_key.keys() - listed:
            del self._by_key[gone]


class Invalid(Exception):
    """A write refused by the schema; ``reasons`` lists every problem."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def strip_server_fields(data: Any) -> tuple[dict[str, Any], str | None]:
    """A copy of ``data`` (and of its metadata; the rest is shared) without the server fields,
    and the resourceVersion it carried: the version the write expects. For a Kubernetes
    object (``kubernetes.is_kubernetes``) only with ``contentHash`` beside it, as this
    control plane's answers carry them; alone it is the Kubernetes API server's, in every
    ``kubectl get -o yaml`` dump, and is ignored with the rest of the dump's metadata."""
    if not isinstance(data, dict):
        raise Invalid(["a resource must be a JSON object"])
    clean = dict(data)  # only the metadata changes: what it holds is shared with ``data``
    meta = clean.get("metadata")
    version = None
    if isinstance(meta, dict):
        meta = clean["metadata"] = dict(meta)
        # JSON has types: unlike YAML, a number is not taken for a name or label
        wrong = [f"metadata.{f}: must be a string" for f in (*SERVER_FIELDS, "name", "namespace")
                 if f in meta and not isinstance(meta[f], str)]
        labels = meta.get("labels")
        if isinstance(labels, dict):
            wrong += [f"metadata.labels.{k}: must be a string" for k, v in labels.items()
                      if not isinstance(v, str)]
        if wrong:
            raise Invalid(wrong)
        raw = meta.pop("resourceVersion", "")
        answered = meta.pop("contentHash", None) is not None
        # a Kubernetes object's resourceVersion without the contentHash of our answers is
        # the Kubernetes API server's (a kubectl dump), not a version of this store
        version = (raw or None) if answered or not is_kubernetes(clean) else None
    return clean, version


def validate(data: dict[str, Any], kind: str, namespace: str, name: str) -> Resource:
    """The model of ``data``, which must be the resource the URL names."""
    result = load_data(data, "request body")
    if result.errors:
        raise Invalid([_reason(e) for e in result.errors])
    resource = result.resources[0]
    if (resource.kind, resource.namespace, resource.name) != (kind, namespace, name):
        raise Invalid([
            f"the body is {resource.kind} {resource.key} but the URL names {kind} "
            f"{namespace}/{name}"
        ])
    return resource


def _reason(error: ConfigError) -> str:
    where = f"{error.field}: " if error.field else ""
    return f"{where}{error.message}"


def normalized(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the namespace filled in, as stored (a copy of ``data`` and of its
    metadata; what else it holds is shared)."""
    meta = dict(data.get("metadata", {}))
    meta.setdefault("namespace", "default")
    return {**data, "metadata": meta}


def content_hash(resource: Resource) -> str:
    canonical = resource.model_dump(mode="json", by_alias=True)
    text = json_sorted(canonical)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_stored(item: StoredResource) -> Resource | None:
    result = load_data(item.data, f"{item.kind} {item.key}")
    return result.resources[0] if result.ok else None


def answer(item: StoredResource, known_hash: str | None = None) -> dict[str, Any]:
    """What the API shows: the resource, secrets redacted, with the server fields.
    ``known_hash``: the ``content_hash`` of the resource ``item.data`` validates to, if it
    is known (otherwise it is validated here)."""
    data = redact(item.data)  # a copy
    meta = data.setdefault("metadata", {})
    meta["resourceVersion"] = item.version
    if known_hash is None:
        resource = load_stored(item)
        known_hash = content_hash(resource) if resource is not None else None
    if known_hash is not None:
        meta["contentHash"] = known_hash
    return data
