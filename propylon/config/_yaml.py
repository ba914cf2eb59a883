"""YAML documents as plain data plus the line of every node.

The node graph is composed with libyaml (``CSafeLoader``) when available; each document becomes
``Document(data, lines)`` where ``lines`` maps a field path (a tuple of mapping keys and list
indices, as pydantic reports error locations) to its 1-based line. A mapping entry's line is
the line of its key, so errors point at the field name the user wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from propylon.config.errors import ConfigError

_Loader: type[yaml.SafeLoader] | Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Path = tuple[str | int, ...]


@dataclass(slots=True)
class Document:
    data: Any
    line: int
    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int:
        """The line of ``path``, or of its nearest ancestor that exists in the source."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return self.line


def parse_documents(text: str, filename: str) -> tuple[list[Document], list[ConfigError]]:
    """Every non-empty document of ``text``; a syntax error ends the file with one error."""
    loader = _Loader(text)
    documents: list[Document] = []
    errors: list[ConfigError] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            doc = Document(data=None, line=node.start_mark.line + 1)
            _index_lines(node, (), doc.lines, errors, filename)
            doc.data = loader.construct_document(node)
            if doc.data is not None:
                documents.append(doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        errors.append(ConfigError(filename, line, None, None, None, f"invalid YAML: {exc.problem}"))
    except yaml.YAMLError as exc:
        errors.append(ConfigError(filename, None, None, None, None, f"invalid YAML: {exc}"))
    finally:
        loader.dispose()
    return documents, errors


def _index_lines(
    node: yaml.Node, path: Path, lines: dict[Path, int], errors: list[ConfigError], filename: str
) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                # Field names are names: YAML 1.1 would read `on:` or `no:` as booleans.
                key_node.tag = "tag:yaml.org,2002:str"
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                msg = f'duplicate key "{key}"'
                errors.append(ConfigError(filename, line, None, None, dotted_path(path), msg))
            seen.add(key)
            lines.setdefault((*path, key), line)
            _index_lines(value_node, (*path, key), lines, errors, filename)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, (*path, index), lines, errors, filename)


def dotted_path(path: Path) -> str | None:
    """``("spec", "rules", 0, "name")`` as ``spec.rules[0].name``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None
