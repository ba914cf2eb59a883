"""``json_sorted(value)``: ``json.dumps(value, sort_keys=True, separators=(",", ":"))``
through one C encoder made once. ``json.dumps`` with any argument but the value makes a new
encoder, in Python, on every call; the codec writes hundreds of thousands of values per large
configuration, and policy specs are keyed by their text tens of thousands of times."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

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
