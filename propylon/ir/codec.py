"""JSON encoding of the IR and its content hash.

``to_data`` / ``from_data`` convert between IR dataclasses and plain JSON data; ``seal`` stamps
a snapshot with the hash of its content, so two equal configurations get the same version
wherever they were translated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from propylon.ir import model

T = TypeVar("T")

_HINTS: dict[type, dict[str, Any]] = {}
# The action union is stored with a tag so decoding knows which dataclass to build.
_ACTION_TAGS: dict[str, type] = {
    "forward": model.ForwardIR,
    "redirect": model.RedirectIR,
    "directResponse": model.DirectResponseIR,
}
_TAG_OF = {cls: tag for tag, cls in _ACTION_TAGS.items()}
# Fields left out of the JSON form while they hold their default: added after version 1 of the
# schema, they keep the content hash of configurations that do not use them.
_OMIT_DEFAULT: dict[type, frozenset[str]] = {
    model.SnapshotIR: frozenset({"consumers"}),
    model.ListenerIR: frozenset({"path_normalization", "proxy_protocol", "http2"}),
    model.UpstreamIR: frozenset({"proxy_protocol_version", "protocol"}),
    model.GatewayIR: frozenset({"tracing"}),
}


def _is_default(field: dataclasses.Field[Any], value: Any) -> bool:
    if field.default is not dataclasses.MISSING:
        return bool(value == field.default)
    return field.default_factory is not dataclasses.MISSING and value == field.default_factory()


def to_data(value: Any) -> Any:
    """An IR object as plain JSON-compatible data (dicts, lists, str, numbers, None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        omit = _OMIT_DEFAULT.get(type(value), frozenset())
        data = {
            f.name: to_data(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name not in omit or not _is_default(f, getattr(value, f.name))
        }
        tag = _TAG_OF.get(type(value))
        if tag is not None:
            data["@type"] = tag
        return data
    if isinstance(value, tuple | list):
        return [to_data(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_data(v) for k, v in value.items()}
    return value


def from_data(cls: type[T], data: Any) -> T:
    """Rebuild an IR object of type ``cls`` from ``to_data`` output."""
    return typing.cast(T, _decode(cls, data))


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = get_type_hints(cls, vars(model))
    return hints


def _decode(tp: Any, data: Any) -> Any:
    if data is None:
        return None
    if tp is model.Action or (get_origin(tp) in (typing.Union, types.UnionType)):
        args = [a for a in get_args(tp) if a is not type(None)]
        if isinstance(data, dict) and "@type" in data:
            return _decode(_ACTION_TAGS[data["@type"]], data)
        return _decode(args[0], data) if len(args) == 1 else data
    origin = get_origin(tp)
    if origin is tuple:
        (item,) = get_args(tp)[:1]
        return tuple(_decode(item, v) for v in data)
    if origin is dict or tp is Any:
        return data
    if dataclasses.is_dataclass(tp):
        hints = _hints(tp)  # type: ignore[arg-type]
        kwargs = {
            f.name: _decode(hints[f.name], data[f.name])
            for f in dataclasses.fields(tp)
            if f.name in data
        }
        return typing.cast(Any, tp)(**kwargs)
    return data


def dumps(snapshot: model.SnapshotIR) -> str:
    return json.dumps(to_data(snapshot), sort_keys=True, separators=(",", ":"))


def loads(text: str | bytes) -> model.SnapshotIR:
    return from_data(model.SnapshotIR, json.loads(text))


def content_hash(snapshot: model.SnapshotIR) -> str:
    unsealed = dataclasses.replace(snapshot, version="")
    return hashlib.sha256(dumps(unsealed).encode()).hexdigest()[:16]


def seal(snapshot: model.SnapshotIR) -> model.SnapshotIR:
    """The snapshot with ``version`` set to the hash of its content."""
    return dataclasses.replace(snapshot, version=content_hash(snapshot))
