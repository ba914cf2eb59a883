"""Consumer restrictions of the auth policies (``apiKey``/``basicAuth`` ``consumers``).

Applied after authentication: the consumer is known, the question is whether this route
lets it through (Kong's ``acl``, APISIX's ``consumer-restriction``). A consumer named in
``deny`` (``name`` matches that name in any namespace, ``namespace/name`` only that Consumer)
or carrying a ``denyLabels`` value is refused; then, if ``allow`` or ``allowLabels`` is given,
only a consumer named in ``allow`` or matching every ``allowLabels`` entry passes. Refused
consumers get ``403``. Everything is precomputed into sets; a check is a few look-ups.
"""

from __future__ import annotations

from propylon.filters.base import LocalResponse
from propylon.ir.model import ConsumerIR
from propylon.policies import auth

Labels = tuple[tuple[str, frozenset[str]], ...]


class ConsumerRestriction:
    __slots__ = (
        "allow_keys", "allow_labels", "allow_names", "deny_keys", "deny_labels", "deny_names",
        "forbidden", "restricts_allow",
    )

    def __init__(self, settings: auth.ConsumerRestriction) -> None:
        self.allow_keys, self.allow_names = _refs(settings.allow)
        self.deny_keys, self.deny_names = _refs(settings.deny)
        self.allow_labels = _labels(settings.allow_labels)
        self.deny_labels = _labels(settings.deny_labels)
        self.restricts_allow = settings.allow is not None or bool(self.allow_labels)
        self.forbidden = LocalResponse(403, b"forbidden: consumer not allowed\n")

    @classmethod
    def of(cls, settings: auth.ConsumerRestriction | None) -> ConsumerRestriction | None:
        """The restriction of an auth policy's ``consumers`` section, None without one."""
        return cls(settings) if settings is not None else None

    def admits(self, consumer: ConsumerIR) -> bool:
        if consumer.key in self.deny_keys or consumer.name in self.deny_names:
            return False
        labels = consumer.labels
        if any(labels.get(name) in values for name, values in self.deny_labels):
            return False
        if not self.restricts_allow:
            return True
        if consumer.key in self.allow_keys or consumer.name in self.allow_names:
            return True
        return bool(self.allow_labels) and all(
            labels.get(name) in values for name, values in self.allow_labels)


def _refs(entries: list[str] | None) -> tuple[frozenset[str], frozenset[str]]:
    """(``namespace/name`` entries, bare ``name`` entries)."""
    entries = entries or []
    return (frozenset(e for e in entries if "/" in e),
            frozenset(e for e in entries if "/" not in e))


def _labels(spec: dict[str, list[str]] | None) -> Labels:
    return tuple((name, frozenset(values)) for name, values in (spec or {}).items())
