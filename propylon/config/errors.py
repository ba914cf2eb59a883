"""Configuration errors with their source position.

Every problem found while loading configuration becomes one ``ConfigError`` naming the file,
line and column of the offending YAML node; loaders collect all of them instead of stopping
early.
Translation reports what it finds (unknown upstreams, missing grants, bad delegations,
shadowed rules) with the same type, located through the resource's ``Source``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

NodePath = tuple[str | int, ...]  # ("spec", "rules", 0, "forward"): YAML keys and list indices
Mark = tuple[int, int]  # 1-based line and column of a node

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a resource was defined (the line and column of its document's first node), and
    the line and column of each node of its document (``marks``, keyed by node path; empty for
    resources that did not come from YAML text)."""

    file: str
    line: int
    marks: Mapping[NodePath, Mark] = field(default_factory=dict, compare=False, repr=False)
    column: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"

    def line_of(self, path: str | NodePath | None) -> int:
        """The line of the node at ``path`` (``spec.rules[0].forward`` or a tuple), or of its
        nearest ancestor written in the file (a defaulted field has no line of its own)."""
        return self.mark_of(path)[0]

    def mark_of(self, path: str | NodePath | None) -> tuple[int, int | None]:
        """Line and column of the node at ``path``, as ``line_of`` finds it."""
        parts = parse_node_path(path) if isinstance(path, str) else tuple(path or ())
        for end in range(len(parts), 0, -1):
            mark = self.marks.get(parts[:end])
            if mark is not None:
                return mark
        return self.line, self.column


def parse_node_path(dotted: str) -> NodePath:
    """``spec.rules[0].name`` as ``("spec", "rules", 0, "name")``."""
    return tuple(
        int(index) if index else key for key, index in _PART.findall(dotted)
    )


@dataclass(frozen=True, slots=True)
class ConfigError:
    file: str
    line: int | None
    kind: str | None
    name: str | None  # "namespace/name"
    field: str | None  # dotted path, e.g. spec.rules[0].forward.backends[1].weight
    message: str
    # "error": loading refuses the file, or translation makes the resource Invalid;
    # "warning": translation keeps the resource (a rule another rule fully shadows)
    severity: str = "error"
    column: int | None = None  # 1-based, in characters; only with a line

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.line is not None and self.column is not None:
            where += f":{self.column}"
        what = " ".join(part for part in (self.kind, self.name) if part)
        parts = [where, what, self.field or ""]
        return ": ".join(part for part in parts if part) + f": {self.message}"
