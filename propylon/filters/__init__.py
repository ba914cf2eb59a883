"""Policy filters: one module per policy type, all on the contract of ``base.Filter``."""

from propylon.filters.base import PHASES, Filter, FilterContext, LocalResponse, overrides
from propylon.filters.registry import FILTER_CLASSES, filter_class

__all__ = [
    "FILTER_CLASSES",
    "PHASES",
    "Filter",
    "FilterContext",
    "LocalResponse",
    "filter_class",
    "overrides",
]
