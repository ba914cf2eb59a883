"""Configuration errors with their source position.

Every problem found while loading configuration becomes one ``ConfigError`` naming the file
and line of the offending YAML node; loaders collect all of them instead of stopping early.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Source:
    """Where a resource was defined."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class ConfigError:
    file: str
    line: int | None
    kind: str | None
    name: str | None  # "namespace/name"
    field: str | None  # dotted path, e.g. spec.rules[0].forward.backends[1].weight
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        what = " ".join(part for part in (self.kind, self.name) if part)
        parts = [where, what, self.field or ""]
        return ": ".join(part for part in parts if part) + f": {self.message}"
