"""Which filter class implements each policy type (names as in ``propylon.ir.POLICY_ORDER``)."""

from __future__ import annotations

from propylon.filters.base import Filter
from propylon.filters.headers import HeadersFilter

FILTER_CLASSES: dict[str, type[Filter]] = {
    HeadersFilter.policy_type: HeadersFilter,
}


def filter_class(policy_type: str) -> type[Filter]:
    cls = FILTER_CLASSES.get(policy_type)
    if cls is None:
        raise ValueError(f'policy "{policy_type}" is not supported yet')
    return cls
