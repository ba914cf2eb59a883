"""``json_sorted(value)``: ``json.dumps(value, sort_keys=True, separators=(",", ":"))``
through one C encoder made once. ``json.dumps`` with any argument but the value makes a new
encoder, in Python, on every call; the codec writes hundreds of thousands of values per large
configuration, and policy specs are keyed by their text tens of thousands of times."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

ESCAPED: Callable[[str], str] = json.encoder.encode_basestring_ascii
_C_ENCODER: Any = json.encoder.c_make_encoder  # type: ignore[attr-defined]
# what json.dumps calls for a value that is not JSON: it raises the same TypeError
_REFUSE = json.JSONEncoder().default
_JSON_CHUNKS: Any = (None if _C_ENCODER is None else
                     _C_ENCODER(None, _REFUSE, ESCAPED, None, ":", ",", True, False, True))


def json_sorted(value: Any) -> str:
    """The compact JSON text of ``value`` (plain JSON data, without cycles) with keys sorted;
    ``TypeError`` for anything else, as ``json.dumps``."""
    if _JSON_CHUNKS is None:  # no C accelerator
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return "".join(_JSON_CHUNKS(value, 0))


def json_list(items: Sequence[T], write: Callable[[T], str], batch: int = 100) -> str:
    """The JSON list of ``items``, each item's text made by ``write``, and joined ``batch`` at
    a time: each item's text (and whatever ``write`` made for it) is freed before the next,
    its batch's text is one large string given back to the system when freed, where many
    small ones stay in the interpreter's heap (a listing of 10,000 resources held at once,
    then kept by the heap, was a copy of all their data)."""
    batches = [",".join([write(item) for item in items[at:at + batch]])
               for at in range(0, len(items), batch)]
    return "[" + ",".join(batches) + "]"
