"""GitOps planning for ``apply``, ``diff`` and ``--prune``: pure functions over plain data.

Local resources (from files) are compared with the control plane's by ``contentHash`` (the
hash of the normalized content, computed on both sides), so a change hidden by redaction is
still seen. ``plan`` lists what ``apply`` would do; ``affected_gateways`` says which Gateways
each change reaches, before (the control plane's statuses) and after (a local translation).
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
from propylon.config import Resource, load_data, load_paths
from propylon.controlplane.resources import content_hash

Key = tuple[str, str, str]  # kind, namespace, name
_SUFFIXES = (".yaml", ".yml")


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
    """Every resource in ``paths`` as data plus model, or every error (with file:line)."""
    loaded = load_paths(paths)
    if loaded.errors:
        return [], [str(e) for e in loaded.errors]
    local = []
    for file in _files(paths):
        for doc in yaml.safe_load_all(file.read_text(encoding="utf-8")):
            if doc is None:
                continue
            model = load_data(doc, str(file)).resources[0]
            data = {**doc, "metadata": {**doc["metadata"], "namespace": model.namespace}}
            local.append(LocalResource(key_of(data), data, model))
    return local, []


def _files(paths: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _SUFFIXES)
        else:
            found.append(path)
    return found


def labels_match(data: dict[str, Any], selector: dict[str, str]) -> bool:
    labels = data.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def plan(
    local: Sequence[LocalResource],
    remote: Sequence[dict[str, Any]],
    prune: dict[str, str] | None = None,
) -> list[Change]:
    """What applying ``local`` over ``remote`` does; with ``prune`` (a label selector), remote
    resources matching it that ``local`` no longer holds are deleted."""
    by_key = {key_of(r): r for r in remote}
    changes = []
    for item in local:
        current = by_key.get(item.key)
        if current is None:
            changes.append(Change("create", item.key, item.data, None))
        elif current.get("metadata", {}).get("contentHash") != content_hash(item.model):
            changes.append(Change("update", item.key, item.data, current))
        else:
            changes.append(Change("unchanged", item.key, item.data, current))
    if prune is not None:
        wanted = {item.key for item in local}
        changes += [
            Change("delete", key, None, data)
            for key, data in sorted(by_key.items())
            if key not in wanted and labels_match(data, prune)
        ]
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


def parse_selector(items: Sequence[str]) -> dict[str, str]:
    selector = {}
    for item in items:
        for part in item.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"a label selector is key=value, got {part!r}")
            selector[key.strip()] = value.strip()
    return selector
