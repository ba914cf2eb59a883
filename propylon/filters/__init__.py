"""Policy filters: one module per policy type, all on the contract of ``base.Filter``."""

from propylon.filters.base import (
    PHASES,
    Filter,
    FilterContext,
    FilterEnv,
    LocalResponse,
    overrides,
)
from propylon.filters.registry import FILTER_CLASSES, filter_class

__all__ = [
    "FILTER_CLASSES",
    "PHASES",
    "Filter",
    "FilterContext",
    "FilterEnv",
    "LocalResponse",
    "filter_class",
    "overrides",
]
