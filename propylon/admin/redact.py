"""Removing secrets from data shown by admin APIs."""

from __future__ import annotations

from typing import Any

REDACTED = "<redacted>"
# Field names whose values are secrets wherever they appear.
SECRET_KEYS = frozenset(
    {
        "secret", "password", "token", "apikey", "apikeys", "privatekey", "credentials",
        "value_hash", "hash", "salt",
    }
)


# A Kubernetes Secret (apiVersion v1): every value of these fields is secret, whatever its key.
_SECRET_OBJECT_FIELDS = ("data", "stringData")


def redact(data: Any) -> Any:
    """A copy of ``data`` with the values of secret-named fields replaced."""
    if isinstance(data, dict):
        if data.get("kind") == "Secret" and data.get("apiVersion") == "v1":
            return {k: _every_value(v) if k in _SECRET_OBJECT_FIELDS else redact(v)
                    for k, v in data.items()}
        return {
            k: REDACTED if _is_secret(k) and v not in (None, "", [], {})
            else v if type(v) in _PLAIN else redact(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [v if type(v) in _PLAIN else redact(v) for v in data]
    return data


_PLAIN = frozenset({str, int, float, bool, type(None)})  # nothing inside to redact


def _every_value(values: Any) -> Any:
    if isinstance(values, dict):
        return {k: REDACTED for k in values}
    return REDACTED if values not in (None, "", [], {}) else values


def _is_secret(key: str) -> bool:
    found = _SECRET_NAMES.get(key)
    if found is None:
        found = key.replace("-", "").replace("_", "").lower() in SECRET_KEYS
        if len(_SECRET_NAMES) < _SECRET_NAMES_KEPT:
            _SECRET_NAMES[key] = found
    return found


# Whether each field name seen is a secret's: a configuration's IR has a few dozen, met once
# per rule (10,000 Routes: 0.49 s of /config was spent normalising the same names again).
_SECRET_NAMES: dict[str, bool] = {}
_SECRET_NAMES_KEPT = 4096
