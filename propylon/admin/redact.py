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
            k: REDACTED if _is_secret(k) and v not in (None, "", [], {}) else redact(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data


def _every_value(values: Any) -> Any:
    if isinstance(values, dict):
        return {k: REDACTED for k in values}
    return REDACTED if values not in (None, "", [], {}) else values


def _is_secret(key: str) -> bool:
    return key.replace("-", "").replace("_", "").lower() in SECRET_KEYS
