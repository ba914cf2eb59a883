"""Duration strings (``250ms``, ``5s``, ``1m``, ``1h``, or sums like ``1m30s``) as float seconds."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_HINT = "a duration is a string like 250ms, 5s, 1m or 1h"


def parse_duration(value: object, allow_zero: bool = False) -> float:
    """Seconds in ``value``; raises ``ValueError`` with a readable message otherwise.
    ``allow_zero`` accepts ``0s`` (for settings where zero means "off")."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"invalid duration {value!r}: {DURATION_HINT}")
    pos, total = 0, 0.0
    while pos < len(value):
        part = _PART.match(value, pos)
        if part is None:
            raise ValueError(f"invalid duration {value!r}: {DURATION_HINT}")
        total += float(part.group(1)) * _UNIT_SECONDS[part.group(2)]
        pos = part.end()
    if total < 0 or (total == 0 and not allow_zero):
        raise ValueError(f"invalid duration {value!r}: must be greater than 0")
    return round(total, 6)
