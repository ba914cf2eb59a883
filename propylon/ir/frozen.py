"""Frozen slotted dataclasses made quicker to construct.

A frozen dataclass's ``__init__`` sets each field with ``object.__setattr__(self, name,
value)`` looked up by name; a configuration of 10,000 Routes makes hundreds of thousands of
IR objects and translation drafts when translated, and again when decoded. ``quicker_init``
gives such a class the same ``__init__`` (same parameters, defaults and default factories)
setting each slot through its own descriptor instead: half the time. Everything else (frozen
assignment refused, equality, hashing, ``repr``) is what ``dataclass`` made.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, TypeVar

T = TypeVar("T", bound=type)

_FACTORY = object()  # an argument left to its field's default factory


def quicker_init(cls: T) -> T:
    """``cls`` with the quicker ``__init__`` if it is a frozen dataclass with slots whose
    ``__init__`` takes exactly its fields, positionally or by keyword, and has no
    ``__post_init__``; any other class is left as it is."""
    if not _applies(cls):
        return cls
    scope: dict[str, Any] = {"_FACTORY": _FACTORY}
    params, body = [], []
    for i, f in enumerate(dataclasses.fields(cls)):
        scope[f"set{i}"] = getattr(cls, f.name).__set__
        if f.default is not dataclasses.MISSING:
            scope[f"default{i}"] = f.default
            params.append(f"{f.name}=default{i}")
            body.append(f"    set{i}(self, {f.name})")
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"factory{i}"] = f.default_factory
            params.append(f"{f.name}=_FACTORY")
            body.append(f"    set{i}(self, factory{i}() if {f.name} is _FACTORY else {f.name})")
        else:
            params.append(f.name)
            body.append(f"    set{i}(self, {f.name})")
    exec(f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body or ["    pass"]), scope)
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[misc]
    return cls


def _applies(cls: type) -> bool:
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        return False
    if "__slots__" not in cls.__dict__ or hasattr(cls, "__post_init__"):
        return False
    fields = dataclasses.fields(cls)
    if not all(f.init for f in fields):
        return False
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]  # after self
    return [p.name for p in parameters] == [f.name for f in fields] and all(
        p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters)
