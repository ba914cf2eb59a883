"""The shape of the documents an importer reads, checked before it reads them.

Each importer declares the fields it reads (``Map``: known keys, unknown ones ignored, some
required; ``List``; ``Dict`` with keys of any name; ``OneOf``; ``Kinds`` by the document's
``kind``) and scalars (``STR``, ``INT``, ``NUM``, ``BOOL``, ``SCALAR``). ``check`` walks a
document along its shape and raises a ``FieldError`` naming the first field that does not fit
(``services[0].routes``: must be a list, not a mapping), which ``import_paths`` reports at
that field's line: a badly shaped document is an error, never an exception from deep in an
importer. ``null`` fits every shape (the importers treat it as absent).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from propylon.config.k8s_fields import FieldError, describe, path


class Shape:
    expected = ""

    def check(self, value: Any, at: str) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Scalar(Shape):
    types: tuple[type, ...]
    expected: str = ""

    def check(self, value: Any, at: str) -> None:
        # bool is an int in Python: a boolean fits only where booleans do
        if not isinstance(value, self.types) or (isinstance(value, bool)
                                                 and bool not in self.types):
            raise FieldError(at, f"must be {self.expected}, not {describe(value)}")


class Anything(Shape):
    """Not checked here (the importer reads it with ``k8s_fields``, which locates errors)."""

    def check(self, value: Any, at: str) -> None:
        return None


ANY = Anything()
STR = Scalar((str,), "a string")
INT = Scalar((int,), "an integer")
NUM = Scalar((int, float), "a number")
BOOL = Scalar((bool,), "a boolean")
SCALAR = Scalar((str, int, float, bool), "a string or a number")
STR_OR_INT = Scalar((str, int), "a string or an integer")


@dataclass(frozen=True)
class Map(Shape):
    fields: Mapping[str, Shape] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    expected: str = "a mapping"

    def check(self, value: Any, at: str) -> None:
        if not isinstance(value, dict):
            raise FieldError(at, f"must be a mapping, not {describe(value)}")
        for key in self.required:
            if value.get(key) is None:
                raise FieldError(path(at, key), "required field is missing")
        for key, shape in self.fields.items():
            if value.get(key) is not None:
                shape.check(value[key], path(at, key))


@dataclass(frozen=True)
class Dict(Shape):
    """A mapping whose keys are names (hosts, headers, plugins): each value of ``value``,
    or of ``by_key[key]`` for the keys listed there (a plugin's configuration)."""

    value: Shape
    by_key: Mapping[str, Shape] = field(default_factory=dict)
    expected: str = "a mapping"

    def check(self, data: Any, at: str) -> None:
        if not isinstance(data, dict):
            raise FieldError(at, f"must be a mapping, not {describe(data)}")
        for key, item in data.items():
            if item is not None:
                self.by_key.get(str(key), self.value).check(item, path(at, str(key)))


@dataclass(frozen=True)
class List(Shape):
    item: Shape
    expected: str = "a list"

    def check(self, value: Any, at: str) -> None:
        if not isinstance(value, list):
            raise FieldError(at, f"must be a list, not {describe(value)}")
        for i, item in enumerate(value):
            if item is None:
                raise FieldError(path(at, i), f"must be {self.item.expected}, not null")
            self.item.check(item, path(at, i))


@dataclass(frozen=True)
class OneOf(Shape):
    """The first of ``shapes`` whose container type fits (a mapping, a list, a scalar)."""

    shapes: tuple[Shape, ...]

    @property
    def expected(self) -> str:  # type: ignore[override]
        return " or ".join(s.expected for s in self.shapes)

    def check(self, value: Any, at: str) -> None:
        for shape in self.shapes:
            if _fits_outside(shape, value):
                shape.check(value, at)
                return
        raise FieldError(at, f"must be {self.expected}, not {describe(value)}")


@dataclass(frozen=True)
class Kinds(Shape):
    """A mapping whose shape depends on the string at ``key`` (a document's ``kind``, a
    plugin's ``name``; a tuple: a nested key such as ``policyRef.name``); other values of it
    are not checked further here."""

    kinds: Mapping[str, Shape]
    key: str | tuple[str, ...] = "kind"
    expected: str = "a mapping"

    def check(self, value: Any, at: str) -> None:
        if not isinstance(value, dict):
            raise FieldError(at, f"must be a mapping, not {describe(value)}")
        kind: Any = value
        where = at
        for key in (self.key,) if isinstance(self.key, str) else self.key:
            kind = kind.get(key) if isinstance(kind, dict) else None
            where = path(where, key)
        if kind is not None:
            STR.check(kind, where)
        shape = self.kinds.get(kind) if isinstance(kind, str) else None
        if shape is not None:
            shape.check(value, at)


@dataclass(frozen=True)
class AllOf(Shape):
    shapes: tuple[Shape, ...]
    expected: str = "a mapping"

    def check(self, value: Any, at: str) -> None:
        for shape in self.shapes:
            shape.check(value, at)


def _fits_outside(shape: Shape, value: Any) -> bool:
    if isinstance(shape, Map | Dict | Kinds | AllOf):
        return isinstance(value, dict)
    if isinstance(shape, List):
        return isinstance(value, list)
    return not isinstance(value, dict | list)


def check(document: Any, shape: Shape) -> None:
    """Raise a ``FieldError`` at the first field of ``document`` that does not fit."""
    if document is not None:
        shape.check(document, "")
