"""JSON pointers (RFC 6901) for ``transform``: set and remove values in a parsed document.

``set`` creates missing objects on the way (``/a/b`` on ``{}`` gives ``{"a": {"b": v}}``);
in an array a token is an index (an existing element is replaced, the length appends) or
``-`` (appends). ``remove`` of something absent changes nothing. A path through a scalar, or
an index that is neither, is a ``PointerError``.
"""

from __future__ import annotations

import copy
from typing import Any


class PointerError(ValueError):
    pass


def tokens(pointer: str) -> tuple[str, ...]:
    """The reference tokens of a pointer (``/a~1b/c`` -> ``("a/b", "c")``)."""
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:])


def _index(token: str, size: int, pointer: str) -> int:
    if token == "-":
        return size
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PointerError(f"{pointer}: {token!r} is not an array index")
    return int(token)


def set_value(doc: Any, path: tuple[str, ...], value: Any, pointer: str) -> Any:
    """``doc`` with the value at ``path`` set (a copy of ``value``); the root is replaced
    when ``path`` is empty."""
    if not path:
        return copy.deepcopy(value)
    parent = doc
    for token in path[:-1]:
        if isinstance(parent, dict):
            if token not in parent:
                parent[token] = {}
            parent = parent[token]
        elif isinstance(parent, list):
            at = _index(token, len(parent), pointer)
            if at >= len(parent):
                parent.append({})
                at = len(parent) - 1
            parent = parent[at]
        else:
            raise PointerError(f"{pointer}: goes through a {type(parent).__name__}")
    last = path[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        at = _index(last, len(parent), pointer)
        if at < len(parent):
            parent[at] = copy.deepcopy(value)
        elif at == len(parent):
            parent.append(copy.deepcopy(value))
        else:
            raise PointerError(f"{pointer}: index {at} is past the end")
    else:
        raise PointerError(f"{pointer}: goes through a {type(parent).__name__}")
    return doc


def remove_value(doc: Any, path: tuple[str, ...]) -> Any:
    """``doc`` without the value at ``path`` (unchanged when there is none); an empty path
    removes the whole document (``None``)."""
    if not path:
        return None
    parent = doc
    for token in path[:-1]:
        if isinstance(parent, dict) and token in parent:
            parent = parent[token]
        elif isinstance(parent, list) and token.isdigit() and int(token) < len(parent):
            parent = parent[int(token)]
        else:
            return doc
    last = path[-1]
    if isinstance(parent, dict):
        parent.pop(last, None)
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    return doc
