"""``allowedRoutes.namespaces.from: Selector``: which namespaces a listener's label selector
admits, from the ``v1`` ``Namespace`` objects given in the inputs (a ``kubectl get namespaces
-o yaml`` dump works).

The selector is a Kubernetes ``LabelSelector``: ``matchLabels`` and ``matchExpressions``
(``In``, ``NotIn``, ``Exists``, ``DoesNotExist``), all of which must hold; an empty selector
admits every namespace given. Each Namespace carries the label
``kubernetes.io/metadata.name: NAME``, as the API server adds it. A route's namespace without
a Namespace object is not admitted (its labels are unknown).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from propylon.config.k8s_fields import (
    FieldError,
    choice,
    describe,
    entries,
    path,
    section,
    text,
    texts,
)
from propylon.config.kubernetes import KubernetesObject

NAME_LABEL = "kubernetes.io/metadata.name"
_OPERATORS = {"In": "In", "NotIn": "NotIn", "Exists": "Exists", "DoesNotExist": "DoesNotExist"}


@dataclass(frozen=True, slots=True)
class _Requirement:
    key: str
    operator: str
    values: frozenset[str]

    def holds(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        present = labels.get(self.key) in self.values
        return present if self.operator == "In" else not present


@dataclass(frozen=True, slots=True)
class NamespaceSelector:
    requirements: tuple[_Requirement, ...]

    @classmethod
    def read(cls, raw: Mapping[str, object], at: str) -> NamespaceSelector:
        """The ``selector`` of ``raw`` (``allowedRoutes.namespaces``); a ``FieldError`` when a
        field has the wrong type or an expression is not valid."""
        selector = section(raw, "selector", at)
        at = path(at, "selector")
        found = [_Requirement(key, "In", frozenset([value]))
                 for key, value in _labels(section(selector, "matchLabels", at),
                                           path(at, "matchLabels"))]
        for where, expression in entries(selector, "matchExpressions", at):
            key = text(expression, "key", where)
            if not key:
                raise FieldError(path(where, "key"), "required field is missing")
            if text(expression, "operator", where) is None:
                raise FieldError(path(where, "operator"), "required field is missing")
            operator = choice(expression, "operator", where, _OPERATORS, "In")
            values = frozenset(texts(expression, "values", where))
            if (operator in ("In", "NotIn")) != bool(values):
                raise FieldError(path(where, "values"), "In and NotIn need values, Exists "
                                 "and DoesNotExist none")
            found.append(_Requirement(key, operator, values))
        return cls(tuple(found))

    def admits(self, namespace: str, namespaces: Mapping[str, Mapping[str, str]]) -> bool:
        labels = namespaces.get(namespace)
        return labels is not None and all(r.holds(labels) for r in self.requirements)


def namespace_labels(objects: Iterable[KubernetesObject]) -> dict[str, dict[str, str]]:
    """The labels of each Namespace given, by name (with ``kubernetes.io/metadata.name``)."""
    return {o.name: {**o.metadata.labels, NAME_LABEL: o.name}
            for o in objects if o.kind == "Namespace"}


def _labels(raw: dict[str, object], at: str) -> list[tuple[str, str]]:
    pairs = []
    for key, value in raw.items():
        if not isinstance(value, str):
            raise FieldError(path(at, key), f"must be a string, not {describe(value)}")
        pairs.append((key, value))
    return pairs
