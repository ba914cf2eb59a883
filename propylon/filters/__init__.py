"""Policy filters: one module per policy type, all on the contract of ``base.Filter``; the
table of policy types (``propylon/policies/table.py``) says which filter runs which policy
section, and when, and ``build_filter`` builds them from the IR."""

from propylon.filters.base import (
    PHASES,
    Filter,
    FilterContext,
    FilterEnv,
    Headers,
    LocalResponse,
    overrides,
)
from propylon.filters.factory import build_filter, filter_class

__all__ = [
    "PHASES",
    "Filter",
    "FilterContext",
    "FilterEnv",
    "Headers",
    "LocalResponse",
    "build_filter",
    "filter_class",
    "overrides",
]
