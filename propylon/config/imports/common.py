"""What every importer shares: the output (resources, warnings with ``file:line``), names
made valid, URLs and ``host:port`` strings as Upstream endpoints, and reading the files."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from propylon.config._yaml import Document, parse_documents
from propylon.config.errors import parse_node_path
from propylon.config.files import SUFFIXES, folder_files
from propylon.config.imports.shape import Shape, check
from propylon.config.k8s_fields import FieldError
from propylon.config.resources import API_VERSION

NodePath = tuple[str | int, ...]


@dataclass
class Output:
    resources: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # what an importer remembers across the documents of one import (its own keys)
    memo: dict[Any, Any] = field(default_factory=dict)
    _keys: set[tuple[str, str]] = field(default_factory=set)

    def add(self, kind: str, name: str, spec: dict[str, Any], namespace: str = "default",
            labels: dict[str, str] | None = None) -> str:
        """Add a resource; a name already used by that kind gets a ``-2``, ``-3`` suffix.
        The name used."""
        base = valid_name(name)
        name, n = base, 1
        while (kind, f"{namespace}/{name}") in self._keys:
            n += 1
            name = f"{base[:60]}-{n}"
        self._keys.add((kind, f"{namespace}/{name}"))
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if labels:
            metadata["labels"] = labels
        self.resources.append({"apiVersion": API_VERSION, "kind": kind, "metadata": metadata,
                               "spec": spec})
        return name

    def has(self, kind: str, name: str, namespace: str = "default") -> bool:
        """Whether a ``kind`` named ``name`` was added to ``namespace``."""
        return (kind, f"{namespace}/{name}") in self._keys


@dataclass
class Reader:
    """One source document, to warn at the line of a node of it."""

    doc: Document
    file: str
    out: Output

    @property
    def data(self) -> Any:
        return self.doc.data

    def warn(self, path: NodePath, message: str) -> None:
        line, _ = self.doc.mark_of(path)
        self.out.warnings.append(f"{self.file}:{line}: {message}")


def note_string_prefix(reader: Reader, at: NodePath, path: str, product: str) -> None:
    """Warn, once per file, that ``product`` matched ``path`` as a plain string prefix
    (``/api`` also routes ``/apix``) where Propylon's prefix matches whole segments (``/api``,
    ``/api/...``): the import keeps the segment meaning, which is what such a path is almost
    always written for, and says so rather than change routing silently."""
    if path.endswith("/"):
        return  # ends at a segment boundary: the same requests either way
    key = ("string prefix noted", reader.file)
    if key in reader.out.memo:
        return
    reader.out.memo[key] = True
    reader.warn(at, f"{product} matches a path like {path} as a plain string prefix (it also "
                f"routes {path}x); it is imported as a Propylon prefix, which matches whole "
                f"segments ({path}, {path}/...), here and for the other paths of this file: "
                "add a regex match where such paths must reach the route")


def valid_name(text: Any) -> str:
    """``text`` as a resource name: lower-case letters, digits and ``-``, at most 63."""
    name = re.sub(r"[^a-z0-9-]+", "-", str(text).lower()).strip("-")[:63].strip("-")
    return name or "imported"


def endpoint_of(target: str, default_port: int = 80) -> dict[str, Any]:
    """``host:port`` (or a bare host) as an endpoint."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or "]" in port:
        return {"address": target.strip("[]"), "port": default_port}
    return {"address": host.strip("[]"), "port": int(port)}


@dataclass(frozen=True)
class Url:
    scheme: str
    host: str
    port: int
    path: str


def parse_url(url: str) -> Url:
    parts = urlsplit(url)
    scheme = parts.scheme or "http"
    port = parts.port or (443 if scheme in ("https", "grpcs") else 80)
    return Url(scheme, parts.hostname or "", port, parts.path or "/")


def upstream_spec(endpoints: list[dict[str, Any]], tls_host: str | None = None,
                  balancer: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"endpoints": endpoints}
    if tls_host is not None:
        spec["tls"] = {"sni": tls_host}
    if balancer and balancer != "round_robin":
        spec["loadBalancer"] = {"policy": balancer}
    return spec


SOURCES = ("gloo", "apisix", "kong", "flex", "ingress")
Importer = Callable[[Reader], None]
IMPORTERS: dict[str, Importer] = {}
SHAPES: dict[str, Shape] = {}  # what each importer reads (``shape.py``), checked first


def importer(name: str, shape: Shape) -> Callable[[Importer], Importer]:
    def register(function: Importer) -> Importer:
        IMPORTERS[name] = function
        SHAPES[name] = shape
        return function
    return register


def import_paths(source: str, paths: Sequence[str | Path]) -> Output:
    """Every document of ``paths`` imported as ``source`` configuration."""
    for product in SOURCES:  # each registers its importer
        importlib.import_module(f"propylon.config.imports.{product}")
    out = Output()
    run, shape = IMPORTERS[source], SHAPES[source]
    for path in _files(paths, out):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            out.errors.append(f"{path}: {exc}")
            continue
        documents, errors = parse_documents(text, str(path))
        out.errors += [str(e) for e in errors]
        for doc in documents:
            try:
                check(doc.data, shape)
                run(Reader(doc, str(path), out))
            except FieldError as exc:  # the shape's error, or a field read with k8s_fields
                line, _ = doc.mark_of(parse_node_path(exc.field))
                what = exc.text if exc.field else f"the document {exc}"
                out.errors.append(f"{path}:{line}: {what} (this document is not imported)")
            except (ValueError, TypeError, AttributeError, KeyError) as exc:
                # a value the shape lets through but the importer cannot use: still located
                # at the document, the others still imported
                out.errors.append(f"{path}:{doc.line}: cannot import this document: "
                                  f"{type(exc).__name__}: {exc}")
    return out


def _files(paths: Sequence[str | Path], out: Output) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += folder_files(path, (*SUFFIXES, ".json"))
        elif path.is_file():
            files.append(path)
        else:
            out.errors.append(f"{path}: no such file or folder")
    return files


def rate_limit(requests: int, per: str) -> dict[str, Any]:
    return {"rateLimit": {"limits": [{"requests": requests, "per": per, "key": ["client_ip"]}]}}


# The tokens of a PCRE / Rust regex as ``python_regex`` and ``has_top_level_alternation`` read
# it (``regex_tokens``): an escape (a backslash and the character after it, or a whole
# ``\\k<name>``), a whole character class, a group's opening ``(`` (``(?<`` when it opens a
# PCRE named group, not a lookbehind), its closing ``)``, or any other character.
ESCAPE, CLASS, OPEN, CLOSE, CHAR = "escape", "class", "open", "close", "char"
_BACK_REFERENCE = re.compile(r"\\k<(\w+)>")


def regex_tokens(pattern: str) -> Iterator[tuple[str, str]]:
    """(kind, text) of each token of ``pattern`` in order; their texts joined are
    ``pattern``. A class runs to its first unescaped ``]`` (one first in it, after an optional
    ``^``, is a literal), or to the end of an unclosed one."""
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            named = _BACK_REFERENCE.match(pattern, i)
            end = named.end() if named else i + 2
            yield ESCAPE, pattern[i:end]
        elif char == "[":
            end = _class_end(pattern, i)
            yield CLASS, pattern[i:end]
        elif char == "(":
            named_group = pattern.startswith("(?<", i) and pattern[i + 3:i + 4] not in ("=", "!")
            end = i + 3 if named_group else i + 1
            yield OPEN, pattern[i:end]
        else:
            end = i + 1
            yield (CLOSE if char == ")" else CHAR), char
        i = end


def _class_end(pattern: str, start: int) -> int:
    """Where the character class opening at ``start`` ends (after its ``]``)."""
    i = start + 1
    i += pattern.startswith("^", i)
    i += pattern.startswith("]", i)
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            continue
        i += 1
        if pattern[i - 1] == "]":
            return i
    return len(pattern)


def python_regex(pattern: str) -> str:
    """A PCRE / Rust regex in Python's syntax: named groups ``(?<name>...)`` become
    ``(?P<name>...)``, back references ``\\k<name>`` ``(?P=name)`` and ``\\z`` ``\\Z``
    (lookbehinds ``(?<=``, ``(?<!``, escapes and character classes are left alone)."""
    return "".join(_python_token(kind, text) for kind, text in regex_tokens(pattern))


def _python_token(kind: str, text: str) -> str:
    if kind == ESCAPE and text.startswith("\\k<"):
        return f"(?P={text[3:-1]})"
    if kind == ESCAPE and text == "\\z":
        return "\\Z"  # PCRE's end of the subject
    if kind == OPEN and text == "(?<":
        return "(?P<"
    return text


def has_top_level_alternation(pattern: str) -> bool:
    """Whether ``pattern`` has a ``|`` outside every group and character class."""
    depth = 0
    for kind, text in regex_tokens(pattern):
        if kind == OPEN:
            depth += 1
        elif kind == CLOSE:
            depth -= 1
        elif text == "|" and kind == CHAR and depth == 0:
            return True
    return False


def ends_anchored(pattern: str) -> bool:
    """Whether ``pattern`` (Python's syntax) ends with an unescaped ``$`` or ``\\Z``."""
    if pattern.endswith("\\Z"):
        body = pattern[:-2]
    elif pattern.endswith("$"):
        body = pattern[:-1]
    else:
        return False
    backslashes = len(body) - len(body.rstrip("\\"))
    return backslashes % 2 == 0
