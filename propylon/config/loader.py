"""Loading resources from YAML files, folders or text, collecting every error at once.

``load_data`` validates one resource given as plain data (the control plane's JSON bodies).
``load_paths`` reads files and folders (every ``*.yaml`` / ``*.yml`` inside, recursively, in
sorted order); each YAML document is one resource, but a Kubernetes list of objects
(``kind: List``, as ``kubectl get -o yaml`` prints) is its items, each read as if written on
its own (its own positions). Errors never stop loading: a document with
errors is left out of ``resources`` and each of its problems becomes one ``ConfigError``.
The first definition of a (kind, namespace, name) wins; a later one is an error naming both.

A document that names a resource (a known ``kind``, native or Kubernetes, and a
``metadata.name``) but fails is also kept, as it was written, in ``rejected``: standalone
mode contains it (``config/recovery.py`` says what of it can still be served) instead of
refusing every other resource with it. A Kubernetes object's errors then read as its
Gateway API condition (``Accepted=False UnsupportedValue: ...``), and a valid definition of
a rejected Kubernetes object is left out with it.
Errors that name no resource (YAML syntax, an unknown kind, a document that is not a mapping)
are in ``errors`` only; ``unattributed`` lists them.

``load_paths`` remembers, per file, what its text gave (``_FileCache``, keyed by the text's
SHA-256): a reload parses and validates only the files that changed. Resources are never
modified once loaded, so the same objects serve every load of an unchanged file; and of a
changed file, each document written as it was, at the same line, is the resource it was
(``_KeptDocuments``): one Upstream edited in the file of its Gateway leaves the Gateway, and
so translation's memo of its Routes, as it was. The files to
parse are parsed on every core when asked and there are many (``parse_pool.py``), each
file's documents validated here while the next files are parsed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from propylon.config._types import UNION_TAGS, shared_sections
from propylon.config._yaml import Document, dotted_path, parse_documents
from propylon.config.errors import ConfigError, Source
from propylon.config.files import read_texts
from propylon.config.kubernetes import (
    KubernetesObject,
    check_kind,
    is_kubernetes,
    is_list,
    list_items,
)
from propylon.config.outlines import outline_key, outline_of
from propylon.config.parse_pool import Parsed, parse_each
from propylon.config.resources import API_VERSION, KINDS, Resource
from propylon.runtime.gc_pause import gc_paused

DEFINED_TWICE = "defined twice"  # how the error about a second definition starts
_MESSAGES = {
    "missing": "required field is missing",
    "extra_forbidden": "unknown field",
}


@dataclass(frozen=True, slots=True)
class Rejected:
    """A document naming a resource that failed validation (or defined an existing one again),
    as written, with its errors."""

    kind: str
    key: str  # "namespace/name"
    data: dict[str, Any]
    source: Source
    errors: tuple[ConfigError, ...]

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.key}"


@dataclass(slots=True)
class LoadResult:
    resources: list[Resource] = field(default_factory=list)
    errors: list[ConfigError] = field(default_factory=list)  # every error, rejected ones too
    rejected: list[Rejected] = field(default_factory=list)
    # ``load_paths(keep_last_loaded=True)``: the errors naming no resource of each file that
    # was read as it was last loaded instead (they are not in ``errors``)
    kept_back: list[ConfigError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def unattributed(self) -> list[ConfigError]:
        """The errors no rejected resource holds: what cannot be contained to a resource."""
        held = {error for rejected in self.rejected for error in rejected.errors}
        return [error for error in self.errors if error not in held]


def load_paths(paths: Sequence[str | Path], *, parallel: bool = False,
               keep_last_loaded: bool = False) -> LoadResult:
    """Every resource in ``paths`` (files or folders) and every error found in them. With
    ``parallel``, many files are parsed on every core (``parse_pool.py``): for one-shot
    commands, whose process has the machine to itself, and the gateway's first build, before
    its workers start (``FileSource.first_build``); never a reload, while workers serve.

    ``keep_last_loaded`` (the gateway's builds): a file with an error that names no resource
    (a YAML syntax error, a document of no known kind or without a name), which cannot be
    contained resource by resource, is read as it was the last time it loaded without one in
    this process, if it did, and its errors are in ``kept_back`` instead of ``errors``: one
    team's broken file neither takes its own resources away nor holds back the other files'
    changes (``standalone.build_snapshot``)."""
    with gc_paused(), shared_sections():
        return _load_paths(paths, parallel, keep_last_loaded)


def _load_paths(paths: Sequence[str | Path], parallel: bool, keep_last_loaded: bool
                ) -> LoadResult:
    result = LoadResult()
    seen: dict[tuple[str, str], Source] = {}
    texts = read_texts(paths, result.errors)
    # the files the cache does not hold are parsed together (on every core if many), each
    # one's documents validated as soon as they are parsed
    digests = [_digest(text) for _, text in texts]
    held = [_FILES.holds(name, digest) for (name, _), digest in zip(texts, digests, strict=True)]
    with contextlib.closing(parse_each(
            [file for file, known in zip(texts, held, strict=True) if not known],
            parallel)) as parsed:
        for (name, text), digest, known in zip(texts, digests, held, strict=True):
            got = None if known else next(parsed)
            if _FILES.replay(result, name, digest, seen):
                _LAST_LOADED[name] = text
                continue
            before = _Sizes.of(result)
            documents = _load_into(result, text, name, seen, got, kept=_FILES.documents(name))
            if not before.unattributed_since(result):
                _FILES.remember(name, digest, result, _Layout.of(text, documents))
                _LAST_LOADED[name] = text
            elif not (keep_last_loaded and _load_last(result, name, text, seen, before)):
                _FILES.remember(name, digest, result)
    names = {name for name, _ in texts}
    _FILES.keep_only(names)
    for gone in _LAST_LOADED.keys() - names:
        del _LAST_LOADED[gone]
    return _leave_out_rejected(result)


# The text of each file as it last loaded without an error naming no resource (by file name),
# what ``keep_last_loaded`` reads instead of a text with one.
_LAST_LOADED: dict[str, str] = {}


def texts_changed(paths: Sequence[str | Path]) -> bool:
    """Whether the files of ``paths`` are not, or not all, the texts the last ``load_paths``
    of them loaded (a file added, removed, rewritten, unreadable, or one with an error naming
    no resource)."""
    errors: list[ConfigError] = []
    texts = read_texts(paths, errors)
    return bool(errors) or dict(texts) != _LAST_LOADED


@dataclass(frozen=True, slots=True)
class _Sizes:
    """How much a ``LoadResult`` held before a file was loaded into it."""

    resources: int
    errors: int
    rejected: int

    @classmethod
    def of(cls, result: LoadResult) -> _Sizes:
        return cls(len(result.resources), len(result.errors), len(result.rejected))

    def unattributed_since(self, result: LoadResult) -> list[ConfigError]:
        """The errors added since, that no rejected resource added since holds."""
        held = {error for r in result.rejected[self.rejected:] for error in r.errors}
        return [error for error in result.errors[self.errors:] if error not in held]

    def undo(self, result: LoadResult) -> None:
        del result.resources[self.resources:]
        del result.errors[self.errors:]
        del result.rejected[self.rejected:]


def _load_last(result: LoadResult, name: str, text: str, seen: dict[tuple[str, str], Source],
               before: _Sizes) -> bool:
    """Read file ``name`` as it last loaded instead of ``text`` (just loaded into ``result``
    with an error naming no resource): False, leaving ``result`` as it is, if it never did."""
    last = _LAST_LOADED.get(name)
    if last is None or last == text:
        return False
    kept_back = before.unattributed_since(result)
    before.undo(result)
    for key in [key for key, source in seen.items() if source.file == name]:
        del seen[key]  # its definitions, made by the text left out
    result.kept_back += kept_back
    digest = _digest(last)
    if not _FILES.replay(result, name, digest, seen):
        _load_into(result, last, name, seen)
        _FILES.remember(name, digest, result)
    return True


def load_parsed(
    texts: Sequence[tuple[str, str]], parsed: Sequence[Parsed],
    outline: Outlines | None = None,
) -> LoadResult:
    """What ``load_paths`` gives of files already read (``read_texts``) and parsed
    (``parse_all``), for a caller that also uses the documents: a resource defined twice
    across them is an error as there. The files' cache is neither read nor written.

    ``outline``: the Routes and RouteTables it wants are not validated but outlined, for a
    process that translates only some Routes but must know every one (``translate/parts.py``);
    another process validates them."""
    result = LoadResult()
    seen: dict[tuple[str, str], Source] = {}
    with gc_paused(), shared_sections():
        for (name, text), documents in zip(texts, parsed, strict=True):
            _load_into(result, text, name, seen, documents, outline)
    return _leave_out_rejected(result)


class Outlines:
    """The Routes and RouteTables a load outlines (``config/outlines.py``) instead of
    validating them: those whose (kind, key) ``wanted`` accepts. ``validated`` gives one this
    process turns out to need (a RouteTable its own Routes delegate to) as validated."""

    def __init__(self, wanted: Callable[[str, str], bool]) -> None:
        self.wanted = wanted
        # id of an outline -> it, its document and file (each entry keeps its outline alive,
        # so an id is never another object's)
        self._documents: dict[int, tuple[Resource, Document, str]] = {}
        self._places: dict[int, int] | None = None  # id of an outline -> index in resources

    def outline(self, doc: Document, filename: str) -> Resource | None:
        found = outline_key(doc.data)
        if found is None or not self.wanted(*found):
            return None
        made = outline_of(doc, filename, found[0])
        if made is not None:
            self._documents[id(made)] = (made, doc, filename)
        return made

    def validated(self, result: LoadResult, resource: _R) -> _R | None:
        """``resource`` of ``result``'s resources as validated: itself unless it is an
        outline; else validated from its document and put in its place in ``result``; None
        if it is not valid (the caller then loads without outlines to report why)."""
        held = self._documents.get(id(resource))
        if held is None or held[0] is not resource:
            return resource
        if self._places is None:
            self._places = {id(r): i for i, r in enumerate(result.resources)
                            if id(r) in self._documents}
        _, doc, filename = held
        with shared_sections():
            built, errors = _build(doc, filename)
        if built is None or errors or type(built) is not type(resource):
            return None
        result.resources[self._places[id(resource)]] = built
        return built


_R = TypeVar("_R", bound=Resource)


class _FileCache:
    """The resources of each file whose every document was valid, by the text's hash.

    Only files without any error are kept: errors (and rejected documents) are rare, and a
    replay must give exactly what ``_load_into`` would, duplicate definitions included: a
    file whose resources meet an earlier definition is loaded again to report it."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, tuple[Resource, ...]]] = {}
        self.layouts: dict[str, _Layout] = {}  # of the files held, when known
        self._marks: dict[str, tuple[int, int, int]] = {}  # file -> result sizes before it

    def holds(self, filename: str, digest: bytes) -> bool:
        cached = self.files.get(filename)
        return cached is not None and cached[0] == digest

    def replay(self, result: LoadResult, filename: str, digest: bytes,
               seen: dict[tuple[str, str], Source]) -> bool:
        self._marks[filename] = (len(result.resources), len(result.errors),
                                 len(result.rejected))
        if not self.holds(filename, digest):
            return False
        resources = self.files[filename][1]
        if any((r.kind, r.key) in seen for r in resources):
            return False
        for resource in resources:
            seen[(resource.kind, resource.key)] = resource.source or Source(filename, 0)
        result.resources.extend(resources)
        return True

    def remember(self, filename: str, digest: bytes, result: LoadResult,
                 layout: _Layout | None = None) -> None:
        resources, errors, rejected = self._marks.pop(filename, (0, 0, 0))
        self.layouts.pop(filename, None)
        if len(result.errors) == errors and len(result.rejected) == rejected:
            self.files[filename] = (digest, tuple(result.resources[resources:]))
            if layout is not None:
                self.layouts[filename] = layout
        else:
            self.files.pop(filename, None)

    def documents(self, filename: str) -> _KeptDocuments | None:
        """The resources the file last loaded as (when held, with its layout), for a load of
        a new text of it."""
        layout, held = self.layouts.get(filename), self.files.get(filename)
        return None if layout is None or held is None else _KeptDocuments(layout, held[1])

    def keep_only(self, files: set[str]) -> None:
        """Forget the files a load did not read, so the cache holds one configuration."""
        for gone in set(self.files) - files:
            del self.files[gone]
            self.layouts.pop(gone, None)
        self._marks.clear()


@dataclass(frozen=True, slots=True)
class _Layout:
    """A file's text and the first line of each of its documents."""

    text: str
    starts: tuple[int, ...]

    @classmethod
    def of(cls, text: str, documents: Sequence[Document]) -> _Layout:
        return cls(text, tuple(doc.line for doc in documents))

    def spans(self) -> dict[int, str]:
        """The text of each document by its first line: from that line to the next
        document's (the separator between them with it)."""
        lines = self.text.splitlines(keepends=True)
        ends = [*self.starts[1:], len(lines) + 1]
        return {start: "".join(lines[start - 1:end - 1])
                for start, end in zip(self.starts, ends, strict=True) if start > 0}


class _KeptDocuments:
    """The resources of a file's last load, each given again (the same object: translation
    keeps what it made of an object it meets again) for a document of its new text written
    as it was, at the same line: the same text there is the same resource at the same place.
    A file with one document changed is validated, and translated, as that one document."""

    def __init__(self, last: _Layout, resources: Sequence[Resource]) -> None:
        self._last, self._resources = last, resources
        self.now: _Layout | None = None
        self._then: dict[int, tuple[str, Resource]] | None = None
        self._spans: dict[int, str] | None = None

    def resource(self, doc: Document) -> Resource | None:
        if self.now is None:
            return None
        if self._then is None:
            spans = self._last.spans()
            lines = [r.source.line if r.source is not None else 0 for r in self._resources]
            once = {line for line, count in Counter(lines).items() if count == 1}
            self._then = {line: (spans[line], r) for line, r in zip(
                lines, self._resources, strict=True) if line in spans and line in once}
            self._spans = self.now.spans()
        then = self._then.get(doc.line)
        assert self._spans is not None
        if then is None or then[0] != self._spans.get(doc.line) or (
                is_kubernetes(doc.data) and is_list(doc.data)):  # its items: their own lines
            return None
        return then[1]


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


_FILES = _FileCache()


def load_text(text: str, filename: str = "<text>", parsed: Parsed | None = None) -> LoadResult:
    """Resources from YAML ``text``; ``filename`` is only used in errors and sources.
    ``parsed``: what ``parse_documents`` gave of it, or of it less some documents."""
    result = LoadResult()
    with shared_sections():
        _load_into(result, text, filename, {}, parsed)
    return _leave_out_rejected(result)


def load_data(data: Any, filename: str = "<data>") -> LoadResult:
    """One resource from plain data (parsed JSON, for instance), validated as a YAML document
    would be; errors carry ``filename`` and no line."""
    result = LoadResult()
    try:
        resource, errors = _build(Document(data=data, line=0), filename)
    except _IsList:
        resource, errors = None, [ConfigError(
            filename, None, data["kind"], None, "kind",
            "a list of objects is read as its items: give each item (propylon apply -f "
            "does)")]
    result.errors.extend(errors)
    if resource is not None:
        result.resources.append(resource)
    return result


def _load_into(
    result: LoadResult, text: str, filename: str, seen: dict[tuple[str, str], Source],
    parsed: Parsed | None = None, outline: Outlines | None = None,
    kept: _KeptDocuments | None = None,
) -> Sequence[Document]:
    """Load ``text``'s documents into ``result``; the documents. ``kept``: the resources
    of the file's last load, each given again for a document written as it was then."""
    documents, errors = parsed if parsed is not None else parse_documents(text, filename)
    own = {error for doc in documents for error in doc.errors}  # reported with their resource
    result.errors.extend(error for error in errors if error not in own)
    if kept is not None:
        kept.now = _Layout.of(text, documents)
    _load_documents(result, documents, filename, seen, outline, kept)
    return documents


def _load_documents(
    result: LoadResult, documents: Sequence[Document], filename: str,
    seen: dict[tuple[str, str], Source], outline: Outlines | None,
    kept: _KeptDocuments | None = None,
) -> None:
    for doc in documents:
        given = kept.resource(doc) if kept is not None and not doc.errors else None
        if outline is not None and not doc.errors:
            given = outline.outline(doc, filename) or given
        try:
            resource, doc_errors = ((given, []) if given is not None
                                    else _build(doc, filename))
        except _IsList:  # kubectl's output: its items, each as if written on its own
            items, doc_errors = _list_documents(doc, filename)
            result.errors.extend((*doc.errors, *doc_errors))
            _load_documents(result, items, filename, seen, outline)
            continue
        if doc.errors:  # a key written twice: an error of this resource, contained with it
            kind, key = _identity(doc.data) if isinstance(doc.data, dict) else (None, None)
            doc_errors += [dataclasses.replace(error, kind=kind, name=key)
                           for error in doc.errors]
        doc_errors.sort(key=lambda e: e.line or 0)
        if resource is not None and not _first_definition(resource, seen, doc_errors):
            resource = None
        if resource is not None and not doc.errors:
            result.resources.append(resource)
            continue
        rejected = _rejected(doc, filename, doc_errors)
        if rejected is not None:
            result.rejected.append(rejected)
            result.errors.extend(rejected.errors)
        else:
            result.errors.extend(doc_errors)


class _IsList(Exception):
    """A document that is a list of objects (``kubernetes.is_list``): its items are loaded
    instead (``_build`` raises it only then, so other documents pay nothing for it)."""


def resource_documents(documents: Sequence[Document], filename: str) -> list[Document]:
    """``documents`` with each list of objects (``kind: List``, as ``kubectl get -o yaml``
    prints) replaced by its items, as the loader reads them: for a caller that uses the
    documents of the resources loaded (``load_parsed``), e.g. ``propylon apply``."""
    found: list[Document] = []
    for doc in documents:
        if is_kubernetes(doc.data) and is_list(doc.data):
            found += resource_documents(_list_documents(doc, filename)[0], filename)
        else:
            found.append(doc)
    return found


def _list_documents(doc: Document, filename: str) -> tuple[list[Document], list[ConfigError]]:
    """The items of the list ``doc`` as documents of their own (their own positions), or the
    error of a list whose ``items`` is not a list."""
    items = list_items(doc.data)
    if items is None:
        line, column = doc.mark_of(("items",))
        return [], [ConfigError(filename, line, doc.data["kind"], None, "items",
                                "must be a list of objects", column=column)]
    return [doc.within(("items", index), item) for index, item in enumerate(items)], []


def _rejected(doc: Document, filename: str, errors: list[ConfigError]) -> Rejected | None:
    """``doc`` as a Rejected resource, if it names one: a native kind, or a Kubernetes kind
    read as input (its errors then say so as the Gateway API does: ``Accepted=False``)."""
    data = doc.data
    if not errors or not isinstance(data, dict):
        return None
    kind, key = _identity(data)
    if kind is None or key is None or not isinstance(
            data["metadata"].get("namespace", ""), str):
        return None
    if is_kubernetes(data):
        if check_kind(data) is not None:
            return None
        errors = [_not_accepted(error) for error in errors]
    elif kind not in KINDS:
        return None
    source = Source(filename, doc.line, doc.marks, doc.column)
    return Rejected(kind, key, data, source, tuple(errors))


def _not_accepted(error: ConfigError) -> ConfigError:
    """The error of a Kubernetes object left out, as its Gateway API condition."""
    if error.message.startswith(DEFINED_TWICE):
        return error  # the status says "defined twice" (translate/containment.py)
    return dataclasses.replace(error, message=f"{_NOT_ACCEPTED}: {error.message}")


_NOT_ACCEPTED = "Accepted=False UnsupportedValue"


def _leave_out_rejected(result: LoadResult) -> LoadResult:
    """Leave out the first, valid definition of each Kubernetes object also rejected (defined
    again, or invalid where written again), as containment does for the native kinds: one
    status, the rejected one's. A Gateway is left to containment (its first definition,
    converted, is disabled, as a native one's is)."""
    if not result.rejected:
        return result
    gone = {(r.kind, r.key) for r in result.rejected
            if r.kind not in KINDS and is_kubernetes(r.data)}
    if gone:
        result.resources = [r for r in result.resources if (r.kind, r.key) not in gone]
    return result


def _build(doc: Document, filename: str) -> tuple[Resource | None, list[ConfigError]]:
    data = doc.data
    if not isinstance(data, dict):
        return None, [ConfigError(filename, doc.line, None, None, None,
                                  "a resource must be a mapping", column=doc.column)]
    kind, name = _identity(data)

    def error(path: tuple[str | int, ...], message: str) -> ConfigError:
        line, column = doc.mark_of(path)
        return ConfigError(filename, line, kind, name, dotted_path(path), message,
                           column=column)

    if is_kubernetes(data):
        return _build_kubernetes(doc, data, filename, error)
    if data.get("apiVersion") != API_VERSION:
        got = data.get("apiVersion")
        msg = f'must be "{API_VERSION}" or a Kubernetes kind read as input (see ' \
              'docs/kubernetes.md)' + (f" (got {got!r})" if got is not None else "")
        return None, [error(("apiVersion",), msg)]
    cls = KINDS.get(kind or "")
    if cls is None:
        msg = f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}"
        return None, [error(("kind",), msg if kind else "required field is missing")]
    try:
        resource = cls.model_validate(data)
    except ValidationError as exc:
        return None, [error(_path(e), _message(e)) for e in exc.errors()]
    resource._source = Source(filename, doc.line, doc.marks, doc.column)
    return resource, []


def _build_kubernetes(
    doc: Document, data: dict[str, Any], filename: str,
    error: Callable[[tuple[str | int, ...], str], ConfigError],
) -> tuple[Resource | None, list[ConfigError]]:
    """A Kubernetes object (``config/kubernetes.py``): its identity is checked here, what it
    says when the whole configuration is converted (``config/gatewayapi.py``)."""
    problem = check_kind(data)
    if problem is not None and is_list(data):
        raise _IsList
    if problem is not None:
        return None, [error(("kind",), problem)]
    try:
        resource = KubernetesObject.model_validate(data)
    except ValidationError as exc:
        return None, [error(_path(e), _message(e)) for e in exc.errors()]
    resource._source = Source(filename, doc.line, doc.marks, doc.column)
    return resource, []


def _identity(data: dict[str, Any]) -> tuple[str | None, str | None]:
    kind = data.get("kind") if isinstance(data.get("kind"), str) else None
    meta = data.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        return kind, None
    namespace = meta.get("namespace", "default")
    return kind, f"{namespace}/{meta['name']}"


def _path(error: ErrorDetails) -> tuple[str | int, ...]:
    # pydantic marks errors in a mapping's key with an extra "[key]" location part, and the
    # chosen member of a tagged union with its tag (see ``_types.UNION_TAGS``)
    return tuple(
        part for part in error["loc"] if part != "[key]" and part not in UNION_TAGS
    )


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind == "value_error" and "error" in error.get("ctx", {}):
        return str(error["ctx"]["error"])
    return error["msg"][:1].lower() + error["msg"][1:]


def _first_definition(
    resource: Resource, seen: dict[tuple[str, str], Source], errors: list[ConfigError]
) -> bool:
    source = resource.source or Source("<unknown>", 0)
    first = seen.setdefault((resource.kind, resource.key), source)
    if first is source:
        return True
    msg = f"{DEFINED_TWICE}: first at {first}, again at {source}"
    errors.append(ConfigError(source.file, source.line, resource.kind, resource.key, None, msg,
                              column=source.column))
    return False
