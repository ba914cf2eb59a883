"""Duration strings (``250ms``, ``5s``, ``1m``, ``1h``, or sums like ``1m30s``) as float seconds;
parsed by ``propylon.schema``."""

from propylon.schema import DURATION_HINT, parse_duration

__all__ = ["DURATION_HINT", "parse_duration"]
