"""Reading the fields of a Kubernetes object as the types conversion needs, or an error.

Kubernetes objects are read leniently: unknown fields are ignored and an absent or ``null``
field takes its default. A field that is present with the wrong type (a mapping where a
string belongs, a string where a list does) is never guessed at: each reader raises a
``FieldError`` naming the field by its dotted path (``spec.rules[0].matches[1].path.type``),
which conversion records as a located condition of the object, of one of its listeners, or
of one rule. Every scalar, list and mapping conversion takes from an object goes through
these readers, so a value of any shape gives an error and never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class FieldError(ValueError):
    """A field whose value cannot be read as what it must be; ``field`` is its dotted path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

    @property
    def text(self) -> str:
        return f"{self.field}: {self}"


def path(at: str, key: str | int) -> str:
    """The dotted path of ``key`` under ``at`` (``spec.rules[0]`` + ``name``)."""
    if isinstance(key, int):
        return f"{at}[{key}]"
    return f"{at}.{key}" if at else key


def describe(value: Any) -> str:
    """What a value is, for messages: its YAML type and a short ``repr``."""
    if value is None:
        return "null"
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
             int: "an integer", float: "a number"}
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"{names.get(type(value), type(value).__name__)} {shown}"


def _wrong(raw: Mapping[str, Any], key: str, at: str, expected: str) -> FieldError:
    return FieldError(path(at, key), f"must be {expected}, not {describe(raw[key])}")


def text(raw: Mapping[str, Any], key: str, at: str) -> str | None:
    """The string at ``raw[key]``; None when absent or null."""
    value = raw.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _wrong(raw, key, at, "a string")


def text_or(raw: Mapping[str, Any], key: str, at: str, default: str) -> str:
    """The string at ``raw[key]``, ``default`` when absent, null or empty."""
    return text(raw, key, at) or default


def integer(raw: Mapping[str, Any], key: str, at: str, minimum: int | None = None) -> int | None:
    """The integer at ``raw[key]`` (not a boolean), at least ``minimum`` when one is given;
    None when absent or null."""
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong(raw, key, at, "an integer")
    if minimum is not None and value < minimum:
        raise FieldError(path(at, key), f"must be at least {minimum}, not {value}")
    return value


def int_or_text(raw: Mapping[str, Any], key: str, at: str) -> int | str | None:
    """An IntOrString field (a port by number or by name); None when absent or null."""
    value = raw.get(key)
    return value if isinstance(value, str) else integer(raw, key, at)


def section(raw: Mapping[str, Any], key: str, at: str) -> dict[str, Any]:
    """The mapping at ``raw[key]``; an empty one when absent or null."""
    value = raw.get(key)
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    raise _wrong(raw, key, at, "a mapping")


def items(raw: Mapping[str, Any], key: str, at: str) -> list[Any]:
    """The list at ``raw[key]``; an empty one when absent or null."""
    value = raw.get(key)
    if value is None:
        return []
    if isinstance(value, list):
        return value
    raise _wrong(raw, key, at, "a list")


def entries(raw: Mapping[str, Any], key: str, at: str) -> list[tuple[str, dict[str, Any]]]:
    """The items of the list at ``raw[key]`` with their paths, each a mapping."""
    listed = items(raw, key, at)
    if not listed:
        return []
    found = []
    under = f"{at}.{key}" if at else key
    for i, item in enumerate(listed):
        where = f"{under}[{i}]"
        if not isinstance(item, dict):
            raise FieldError(where, f"must be a mapping, not {describe(item)}")
        found.append((where, item))
    return found


def texts(raw: Mapping[str, Any], key: str, at: str) -> list[str]:
    """The strings of the list at ``raw[key]``."""
    values = items(raw, key, at)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise FieldError(path(path(at, key), i), f"must be a string, not {describe(value)}")
    return values


def choice(raw: Mapping[str, Any], key: str, at: str, choices: Mapping[str, T],
           default: str) -> T:
    """``choices[raw[key]]`` (``default`` when absent or null); the field's error when its
    value is not a string or not one of ``choices``."""
    value = text(raw, key, at)
    value = default if value is None else value
    if value not in choices:
        raise FieldError(path(at, key), f"{value!r} is not supported (one of "
                         f"{', '.join(sorted(choices))})")
    return choices[value]
