"""The GitOps client's side of ``apply``, ``diff`` and ``--prune``: pure functions over data.

The plan itself is the control plane's (``POST /v1/apply``, ``controlplane/batch.py``), so
``diff`` shows exactly what ``apply`` does. Here: the local resources (from files, filtered by
``-l`` as ``kubectl apply -l`` does), the plan's changes joined with the local and stored
copies, which Gateways each change reaches before (the control plane's statuses) and after
(a local translation), and a text diff with secrets redacted.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from propylon.admin.redact import redact
from propylon.config import ConfigError, Resource, load_data
from propylon.config.files import read_texts
from propylon.config.loader import load_parsed, resource_documents
from propylon.config.parse_pool import parse_all
from propylon.controlplane.selector import LabelSelector

Key = tuple[str, str, str]  # kind, namespace, name


@dataclass(frozen=True)
class LocalResource:
    key: Key
    data: dict[str, Any]
    model: Resource


@dataclass(frozen=True)
class Change:
    action: str  # create | update | delete | unchanged
    key: Key
    local: dict[str, Any] | None
    remote: dict[str, Any] | None

    @property
    def ref(self) -> str:
        return f"{self.key[0]} {self.key[1]}/{self.key[2]}"


def key_of(data: dict[str, Any]) -> Key:
    meta = data.get("metadata", {})
    return str(data.get("kind")), str(meta.get("namespace", "default")), str(meta.get("name"))


def load_local(paths: Sequence[Path]) -> tuple[list[LocalResource], list[str]]:
    """Every resource in ``paths`` as data plus model, or every error (with file:line). A
    ``kind: List`` (``kubectl get ... -o yaml``) gives its items, as the loader reads it."""
    unread: list[ConfigError] = []
    texts = read_texts(paths, unread)
    parsed = parse_all(texts)  # a one-shot command: every core is its own
    loaded = load_parsed(texts, parsed)
    if unread or loaded.errors:
        return [], [str(e) for e in (*unread, *loaded.errors)]
    # each document's data as the loader read it (YAML 1.1 scalars such as ``yes`` or
    # ``1.10`` stay the strings written), with the resource it gave
    models = {(r.source.file, r.source.line): r for r in loaded.resources if r.source}
    local = []
    for (name, _), (documents, _errors) in zip(texts, parsed, strict=True):
        for doc in resource_documents(documents, name):  # a kind: List's items
            model = models.get((name, doc.line)) or load_data(doc.data, name).resources[0]
            data = {**doc.data, "metadata": _metadata(doc.data["metadata"], model)}
            local.append(LocalResource(key_of(data), data, model))
    return local, []


def _metadata(written: dict[str, Any], model: Resource) -> dict[str, Any]:
    """The metadata sent: as written, but its identity and labels as the model read them
    (``name: 123`` or ``labels: {n: 7}`` are numbers in YAML, their text for the loader,
    and the control plane takes no number there: JSON has types)."""
    metadata = {**written, "name": model.name, "namespace": model.namespace}
    if "labels" in written:
        metadata["labels"] = dict(model.metadata.labels)
    return metadata


def select_local(local: Sequence[LocalResource],
                 selector: LabelSelector | None) -> tuple[list[LocalResource], list[Key]]:
    """The resources ``-l`` keeps, and the keys of those it leaves out."""
    if selector is None:
        return list(local), []
    kept = [item for item in local if selector.matches(item.model.metadata.labels)]
    kept_keys = {item.key for item in kept}
    return kept, [item.key for item in local if item.key not in kept_keys]


def changes_of(answer: dict[str, Any], local: Sequence[LocalResource],
               remote: Sequence[dict[str, Any]]) -> list[Change]:
    """The control plane's plan as Changes carrying the local and stored copies."""
    mine = {item.key: item.data for item in local}
    theirs = {key_of(r): r for r in remote}
    changes = []
    for change in answer["changes"]:
        key = (change["kind"], change["namespace"], change["name"])
        changes.append(Change(change["action"], key, mine.get(key), theirs.get(key)))
    return changes


def affected_gateways(change: Change, before: dict[Key, list[str]],
                      after: dict[Key, list[str]]) -> list[str]:
    return sorted(set(before.get(change.key, [])) | set(after.get(change.key, [])))


def text_diff(change: Change) -> list[str]:
    """A unified diff of the change (secrets redacted on both sides)."""
    def lines(data: dict[str, Any] | None) -> list[str]:
        if data is None:
            return []
        shown = redact(json.loads(json.dumps(data)))
        shown.get("metadata", {}).pop("resourceVersion", None)
        shown.get("metadata", {}).pop("contentHash", None)
        return yaml.safe_dump(shown, sort_keys=True).splitlines()

    return list(difflib.unified_diff(lines(change.remote), lines(change.local),
                                     "control plane", "local", lineterm="", n=2))
