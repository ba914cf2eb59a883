"""YAML documents as plain data plus the position of every node.

Each document becomes ``Document(data, line, column, marks)`` where ``marks`` maps a field
path (a tuple of mapping keys and list indices, as pydantic reports error locations) to its
1-based line and column. A mapping entry's position is that of its key, so errors point at the
field name the user wrote; a list item's is that of the item itself (after its ``- ``).
Columns count characters.

A text of plain data (mappings, lists and scalars: resources as usually written) is built
straight from libyaml's events by the C module ``_libyaml`` (``_libyaml.c``), five times faster
than composing PyYAML's node graph; anything else, or a build without that module, takes the
Python path below: the node graph composed with libyaml (``CSafeLoader``) when available, then
walked. Both give the same data, positions and errors (tests/unit/test_config_load_yaml.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from propylon._extensions import disabled_by_environment
from propylon.config.errors import ConfigError

_BaseLoader: type[yaml.SafeLoader] | Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PLAIN_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_STR, _NULL = "tag:yaml.org,2002:str", "tag:yaml.org,2002:null"
_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
_ScalarNode, _MappingNode, _SequenceNode = yaml.ScalarNode, yaml.MappingNode, yaml.SequenceNode


def _bool_of(text: str) -> bool | str:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _int_of(text: str) -> int | str:
    return int(text) if _PLAIN_INT.fullmatch(text) else text


def _float_of(text: str) -> float | str:
    try:
        value = float(text)
    except ValueError:
        return text  # .inf, .nan, 1_000.5: as written
    return value if repr(value) == text else text


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """YAML 1.1 scalars that would surprise a user are kept as the text they wrote.

    PyYAML reads ``yes``/``no``/``on``/``off`` as booleans, ``010`` as 8, ``1.10`` as 1.1
    and ``2024-01-01`` as a date, so ``set: {x-version: 1.10}`` used to send ``1.1``. As
    YAML 1.2 does, only ``true`` and ``false`` are booleans here; a number is a number only
    when its text is the number's own (``8080``, ``1.5``), otherwise the text stays, and a
    date or time is its text (no field is a date). Typed fields lose nothing: an int, float
    or bool field still takes ``"010"``, ``"1.10"`` or ``"yes"`` (pydantic's lax parsing),
    and a string field gets exactly what was written."""

    def construct_yaml_bool(self, node: yaml.ScalarNode) -> bool | str:
        return _bool_of(str(node.value))

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int | str:
        return _int_of(str(node.value))

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float | str:
        return _float_of(str(node.value))

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> str:
        return str(node.value)

    # libyaml's composer asks these of every node; PyYAML's versions handle path resolvers,
    # which this loader has none of, and were a tenth of the time spent loading YAML.
    def resolve(self, kind: type[yaml.Node], value: Any, implicit: Any) -> str:
        if kind is _ScalarNode:  # then ``value`` is its text
            if implicit[0]:  # a plain scalar: its tag depends on its text only
                return _PLAIN_TAGS.get(value) or _plain_tag(value)
            return _STR
        return _MAP if kind is _MappingNode else _SEQ

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass


_Loader.add_constructor("tag:yaml.org,2002:bool", _Loader.construct_yaml_bool)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)
assert not _Loader.yaml_path_resolvers, "_Loader.resolve ignores path resolvers"
# the implicit resolvers PyYAML's ``resolve`` tries for a plain scalar, by its first character
_WILDCARD: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    _Loader.yaml_implicit_resolvers.get(None, ()))
_IMPLICIT = {
    first: (*_Loader.yaml_implicit_resolvers.get(first, ()), *_WILDCARD)
    for first in {*_Loader.yaml_implicit_resolvers, ""} - {None}
}
# The tags of plain scalars met lately, by text: field names and common values repeat (the
# 960,000 nodes of 10,000 Routes have a few dozen frequent texts); emptied when full.
_PLAIN_TAGS: dict[str, str] = {}
_PLAIN_TAGS_MAX = 4096
_PLAIN_TEXT_MAX = 64  # characters: longer texts are rarely repeated


def _plain_tag(value: str) -> str:
    tag = _STR
    for resolver_tag, regexp in _IMPLICIT.get(value[:1], _WILDCARD):
        if regexp.match(value):
            tag = str(resolver_tag)
            break
    if len(value) <= _PLAIN_TEXT_MAX:
        if len(_PLAIN_TAGS) >= _PLAIN_TAGS_MAX:
            _PLAIN_TAGS.clear()
        _PLAIN_TAGS[value] = tag
    return tag


# What aliases may add to the documents of a text, in nodes, beyond one node per character
# of each document (which no document without aliases reaches): generous for
# `<<: *defaults`, fatal to an alias bomb (a kilobyte of nested aliases names billions of
# nodes); about 0.2 s of work at most.
ALIAS_EXTRA_NODES = 100_000
MAX_DEPTH = 256  # levels of nesting; resources use about ten
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")  # YAML's line breaks

Path = tuple[str | int, ...]
Mark = tuple[int, int]  # 1-based line and column


@dataclass(slots=True)
class Document:
    data: Any
    line: int
    column: int | None = None  # of the document's first node; None for data given as such
    marks: Mapping[Path, Mark] = field(default_factory=dict)
    # what the parser found wrong in this document alone (a key written twice): also among
    # the text's errors, for callers that read those only; the loader rejects its resource
    errors: tuple[ConfigError, ...] = ()

    def mark_of(self, path: Path) -> tuple[int, int | None]:
        """Line and column of ``path``, or of its nearest ancestor written in the source."""
        for end in range(len(path), 0, -1):
            mark = self.marks.get(path[:end])
            if mark is not None:
                return mark
        return self.line, self.column

    def within(self, path: Path, data: Any) -> Document:
        """The node at ``path`` (``data``, e.g. an item of a ``kind: List``) as a document of
        its own: its position and its nodes' positions are its own, as if written alone."""
        line, column = self.mark_of(path)
        return Document(data, line, column, _Within(self.marks, path))


class _Within(Mapping[Path, Mark]):
    """The positions of the nodes below ``prefix`` of a document's ``marks``, by their path
    from there (found when first asked for, as ``marks`` finds them)."""

    __slots__ = ("_marks", "_prefix")

    def __init__(self, marks: Mapping[Path, Mark], prefix: Path) -> None:
        self._marks, self._prefix = marks, prefix

    def __getitem__(self, path: Path) -> Mark:
        return self._marks[(*self._prefix, *path)]

    def get(self, path: Path, default: Any = None) -> Any:
        return self._marks.get((*self._prefix, *path), default)

    def __iter__(self) -> Iterator[Path]:
        size = len(self._prefix)
        return (path[size:] for path in self._marks if path[:size] == self._prefix)

    def __len__(self) -> int:
        return sum(1 for _ in self)


# A document of plain data as ``_libyaml`` builds it: its data, then the 0-based line and
# column where its root node starts and where it ends.
PlainDocument = tuple[Any, int, int, int, int]


def plain_documents(text: str) -> list[PlainDocument] | None:
    """The documents of ``text`` if it is plain data and ``_libyaml`` is there, else None
    (``parse_documents`` takes the Python path)."""
    return _libyaml.load(text) if _libyaml is not None else None


def documents_of(text: str, built: list[PlainDocument]) -> list[Document]:
    """What ``parse_documents`` gives of ``text`` from what ``plain_documents`` gave."""
    return [Document(data, line + 1, column + 1, LazyMarks(text, line, end_line, end_column))
            for data, line, column, end_line, end_column in built if data is not None]


def parse_documents(text: str, filename: str) -> tuple[list[Document], list[ConfigError]]:
    """Every non-empty document of ``text``; a syntax error ends the file with one error."""
    built = plain_documents(text)
    if built is not None:
        return documents_of(text, built), []
    return parse_with_pyyaml(text, filename)


def parse_with_pyyaml(text: str, filename: str) -> tuple[list[Document], list[ConfigError]]:
    """``parse_documents`` without the C module: PyYAML's node graph, walked."""
    loader = _Loader(text)
    documents: list[Document] = []
    errors: list[ConfigError] = []
    budget = _AliasBudget()
    anchors = "&" in text  # without one, no node can be met twice (an alias names an anchor)
    try:
        while loader.check_node():
            node = loader.get_node()
            doc = (None if node is None
                   else _document(loader, node, budget, errors, filename, text, anchors))
            if doc is not None:
                documents.append(doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = column = None
        if mark is not None:
            line, column = mark.line + 1, mark.column + 1
            last = _last_line(text)
            if line > last:
                # libyaml puts an error at the end of a text without a final line break on
                # the line after the last one: it is reported after the last line's end
                line, column = last, len(_LINE_BREAK.split(text)[-1]) + 1
        errors.append(ConfigError(filename, line, None, None, None,
                                  f"invalid YAML: {exc.problem}", column=column))
    except yaml.YAMLError as exc:
        errors.append(ConfigError(filename, None, None, None, None, f"invalid YAML: {exc}"))
    finally:
        loader.dispose()
    return documents, errors


class _AliasBudget:
    """Nodes that aliases may add to the documents of one text, all together. A document
    without aliases has no more nodes than characters, so it never draws on it."""

    def __init__(self) -> None:
        self.extra = ALIAS_EXTRA_NODES


def _document(
    loader: Any, node: yaml.Node, budget: _AliasBudget, errors: list[ConfigError], filename: str,
    text: str, anchors: bool,
) -> Document | None:
    doc = Document(data=None, line=node.start_mark.line + 1, column=node.start_mark.column + 1)
    try:
        doc.data = _PlainWalk().data(node, 0) if anchors else _plain_data(node)
    except _NotPlain:
        pass
    else:
        end = node.end_mark
        doc.marks = LazyMarks(text, node.start_mark.line, end.line, end.column)
        return doc if doc.data is not None else None
    marks: dict[Path, Mark] = {}
    doc.marks = marks
    size = node.end_mark.index - node.start_mark.index + 1
    before = len(errors)
    try:
        walked = _index_marks(node, marks, errors, filename, size + budget.extra)
    except _TooLarge as exc:
        budget.extra = 0  # later documents get their own size, nothing more
        line, column = exc.mark
        errors.append(ConfigError(filename, line, None, None, None, str(exc), column=column))
        return None  # not constructed: its data would be as large, or endless
    budget.extra -= max(0, walked - size)
    doc.errors = tuple(errors[before:])
    doc.data = loader.construct_document(node)
    return doc if doc.data is not None else None


class _NotPlain(Exception):
    """A document the fast walk leaves to ``_index_marks`` and PyYAML's constructor."""


# what a plain scalar of these tags is made into, from its text (``_Loader``'s rules)
_SCALARS: dict[str, Any] = {
    "tag:yaml.org,2002:bool": _bool_of,
    "tag:yaml.org,2002:int": _int_of,
    "tag:yaml.org,2002:float": _float_of,
    "tag:yaml.org,2002:timestamp": str,  # no field is a date: ``2024-01-01`` as written
}


def _plain_data(root: yaml.Node) -> Any:
    """What ``_PlainWalk`` gives for a document of a text without anchors (no ``&``), where
    no node can be met twice: the same data and the same refusals (merge keys, duplicate
    keys, other tags, nesting deeper than ``MAX_DEPTH``) without a set of visited nodes.
    Every node of a resource goes through here, so it is written for speed: string
    scalars (most nodes) are taken inline, types compared with ``is``. (Module functions,
    not closures: a closure that calls itself is a reference cycle, and loading runs with
    the cyclic collector paused, then freezes what is left.)"""
    if type(root) is _ScalarNode:
        return root.value if root.tag == _STR else _plain_scalar(root)
    return _plain_collection(root, 0)


def _plain_scalar(node: yaml.ScalarNode) -> Any:
    tag = node.tag
    if tag == _NULL:
        return None
    make = _SCALARS.get(tag)
    if make is None:
        raise _NotPlain
    return make(str(node.value))


def _plain_collection(node: yaml.Node, depth: int) -> Any:
    # ``depth`` is this node's; its children are one deeper
    kind, items = type(node), node.value
    if items and depth >= MAX_DEPTH:
        raise _NotPlain
    depth += 1
    scalar_node, str_tag = _ScalarNode, _STR
    if kind is _MappingNode and node.tag == _MAP:
        data: dict[str, Any] = {}
        for key_node, value_node in items:
            if type(key_node) is not scalar_node or key_node.value == "<<":
                raise _NotPlain  # a merge key, or a key that is not a name
            if type(value_node) is scalar_node:
                data[key_node.value] = (value_node.value if value_node.tag == str_tag
                                        else _plain_scalar(value_node))
            else:
                data[key_node.value] = _plain_collection(value_node, depth)
        if len(data) != len(items):
            raise _NotPlain  # a duplicate key, reported at its line by _mapping_children
        return data
    if kind is _SequenceNode and node.tag == _SEQ:
        return [(item.value if item.tag == str_tag else _plain_scalar(item))
                if type(item) is scalar_node else _plain_collection(item, depth)
                for item in items]
    raise _NotPlain


class _PlainWalk:
    """One walk of a document of plain mappings, lists and scalars (every resource as usually
    written) giving the data ``construct_document`` would build, several times faster. The
    positions of its nodes are not recorded: they are only needed to report a problem, and
    ``LazyMarks`` finds them again then. Aliases (a node met again), merge keys, duplicate
    keys, other tags and nesting deeper than ``MAX_DEPTH`` raise ``_NotPlain``: the two
    slower steps handle those, with the alias budget and every position. Texts without
    anchors take ``_plain_data`` instead."""

    __slots__ = ("visited",)

    def __init__(self) -> None:
        self.visited: set[int] = set()

    def data(self, node: yaml.Node, depth: int) -> Any:
        if id(node) in self.visited or depth > MAX_DEPTH:
            raise _NotPlain
        self.visited.add(id(node))
        tag = node.tag
        if isinstance(node, yaml.ScalarNode):
            if tag == _STR:
                return node.value
            if tag == _NULL:
                return None
            make = _SCALARS.get(tag)
            if make is None:
                raise _NotPlain
            return make(str(node.value))
        if isinstance(node, yaml.MappingNode) and tag == _MAP:
            return self._mapping(node, depth + 1)
        if isinstance(node, yaml.SequenceNode) and tag == _SEQ:
            return [self.data(item, depth + 1) for item in node.value]
        raise _NotPlain

    def _mapping(self, node: yaml.MappingNode, depth: int) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                raise _NotPlain  # a merge key, or a key that is not a name
            key = str(key_node.value)  # field names are names, as in _mapping_children
            if key in data:
                raise _NotPlain  # reported, at its line, by _mapping_children
            data[key] = self.data(value_node, depth)
        return data


class LazyMarks(Mapping[Path, Mark]):
    """The positions of a plain document's nodes (``Document.marks``), found when first asked
    for by composing the document again from its text: only a problem to report asks, so a
    loaded configuration holds its files' text (shared by their documents) instead of a
    position for each of its nodes (most of the loader's memory at 10,000 Routes)."""

    __slots__ = ("_first", "_found", "_last", "_text")

    def __init__(self, text: str, first_line: int, end_line: int, end_column: int) -> None:
        """The document's root node starts on ``first_line`` and ends where the next token
        starts, ``end_line`` and ``end_column`` (0-based): its last line is the one before
        if that column is 0."""
        self._text, self._first = text, first_line
        self._last = end_line if end_column else end_line - 1
        self._found: dict[Path, Mark] | None = None

    def detach_text(self) -> None:
        """Forget the text (to be pickled without it: the receiver has the file's text)."""
        self._text = ""

    def attach_text(self, text: str) -> None:
        """The text of the file again, after ``detach_text``."""
        self._text = text

    def _marks(self) -> dict[Path, Mark]:
        if self._found is None:
            starts = [0, *(found.end() for found in _LINE_BREAK.finditer(self._text))]
            end = starts[self._last + 1] if self._last + 1 < len(starts) else len(self._text)
            self._found = _marks_of(self._text[starts[self._first]:end], self._first)
        return self._found

    def __getitem__(self, path: Path) -> Mark:
        return self._marks()[path]

    def get(self, path: Path, default: Any = None) -> Any:
        return self._marks().get(path, default)

    def __iter__(self) -> Iterator[Path]:
        return iter(self._marks())

    def __len__(self) -> int:
        return len(self._marks())


def _plain_value(text: str) -> Any:
    """What ``_plain_data`` makes of a plain scalar written ``text``, or ``_NOT_PLAIN``
    (the text is left to the Python path): ``_libyaml`` asks."""
    tag = _PLAIN_TAGS.get(text) or _plain_tag(text)
    if tag == _STR:
        return text
    if tag == _NULL:
        return None
    make = _SCALARS.get(tag)
    return _NOT_PLAIN if make is None else make(text)


_NOT_PLAIN = object()


def fast_builder() -> Any:
    """``_libyaml``, the C module that builds plain documents from libyaml's events, set up
    with this module's rules; None without it (a pure-Python install). ``parse_documents``
    uses it unless ``PROPYLON_NO_EXTENSIONS`` is set; the configuration fuzz target
    compares the two paths in any case."""
    try:
        from propylon.config import _libyaml
    except ImportError:
        return None
    # the first characters of the plain scalars that may be something else than a string
    first = None if _WILDCARD else "".join(key for key in _IMPLICIT if key)
    _libyaml.configure(_plain_value, _NOT_PLAIN, first, MAX_DEPTH)
    return _libyaml


def _marks_of(text: str, lines_before: int) -> dict[Path, Mark]:
    """The positions of the first document of ``text`` (the lines of a document that was read
    whole before, from the start of its first line), ``lines_before`` lines down its file."""
    marks: dict[Path, Mark] = {}
    loader = _Loader(text)
    try:
        node = loader.get_node() if loader.check_node() else None
        if node is not None:
            _index_marks(node, marks, [], "", len(text) + ALIAS_EXTRA_NODES)
    except (yaml.YAMLError, _TooLarge):
        return {}  # not expected for a document read whole before: positions fall back
    finally:
        loader.dispose()
    return {path: (line + lines_before, column) for path, (line, column) in marks.items()}


_libyaml = None if disabled_by_environment() else fast_builder()


def _last_line(text: str) -> int:
    return len(_LINE_BREAK.findall(text)) + 1


class _TooLarge(Exception):
    """A document that aliases make endless, or too large to build (an alias bomb)."""

    def __init__(self, node: yaml.Node, what: str) -> None:
        super().__init__(f"invalid YAML: {what}")
        self.mark = _mark(node)


def _mark(node: yaml.Node) -> Mark:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _index_marks(
    root: yaml.Node, marks: dict[Path, Mark], errors: list[ConfigError], filename: str,
    limit: int,
) -> int:
    """Record the position of every node of the document, walked as its data will be: an alias
    repeats the node it names. The walk is iterative (libyaml nests up to 1000 levels) and
    stops after ``limit`` nodes or ``MAX_DEPTH`` levels; how many nodes it walked."""
    stack: list[tuple[yaml.Node, Path]] = [(root, ())]
    visited = 0
    while stack:
        node, path = stack.pop()
        visited += 1
        if visited > limit:
            raise _TooLarge(node, f"aliases make this document more than {limit} nodes")
        if len(path) > MAX_DEPTH:
            raise _TooLarge(node, f"nested deeper than {MAX_DEPTH} levels "
                            "(or an alias inside the node it names)")
        marks.setdefault(path, _mark(node))
        if node.tag not in _KNOWN_TAGS:
            _unknown_tag(node, path, errors, filename)
        if isinstance(node, yaml.MappingNode):
            children = _mapping_children(node, path, marks, errors, filename)
        elif isinstance(node, yaml.SequenceNode):
            children = [(item, (*path, index)) for index, item in enumerate(node.value)]
        else:
            continue
        stack.extend(reversed(children))  # popped in document order
    return visited


# the tags a document may carry: YAML's own (``!!str``, ``!!int``...); another (``!secret``,
# ``!Ref``) is an error of its resource, which is then contained as any invalid one, not of
# the whole file (the node is read as its plain text, mapping or list, never served)
_KNOWN_TAGS = frozenset(tag for tag in _Loader.yaml_constructors if tag is not None)
_PLAIN_TAG_OF = {yaml.ScalarNode: _STR, yaml.MappingNode: _MAP, yaml.SequenceNode: _SEQ}


def _unknown_tag(node: yaml.Node, path: Path, errors: list[ConfigError], filename: str) -> None:
    line, column = _mark(node)
    errors.append(ConfigError(
        filename, line, None, None, dotted_path(path),
        f"unknown YAML tag {node.tag!r}: only YAML's own tags (such as !!str) are read",
        column=column))
    node.tag = _PLAIN_TAG_OF.get(type(node), _STR)


def _mapping_children(
    node: yaml.MappingNode, path: Path, marks: dict[Path, Mark], errors: list[ConfigError],
    filename: str,
) -> list[tuple[yaml.Node, Path]]:
    children = []
    seen: set[str] = set()
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
            # Field names are names: YAML 1.1 would read `on:` or `no:` as booleans.
            key_node.tag = "tag:yaml.org,2002:str"
        key = str(key_node.value)
        mark = _mark(key_node)
        if key in seen and key != "<<":
            msg = f'duplicate key "{key}"'
            errors.append(ConfigError(filename, mark[0], None, None, dotted_path(path), msg,
                                      column=mark[1]))
        seen.add(key)
        marks.setdefault((*path, key), mark)
        children.append((value_node, (*path, key)))
    return children


def dotted_path(path: Path) -> str | None:
    """``("spec", "rules", 0, "name")`` as ``spec.rules[0].name``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None
