"""A process's heap, settled: the supervisor's and a worker's once their first configuration
serves, the control plane's when it starts.

glibc's allocator raises its mmap threshold to the largest block freed so far (up to 32
MiB): once a configuration of 10,000 Routes has been encoded (strings of tens of megabytes),
blocks of that size come from the heap, and stay in the process's resident set once freed.
The supervisor grew by 50 MiB after one admin ``/config`` and by 5-10 MiB after each of its
first reloads, never given back. ``settle_heap``, once the first configuration serves, fixes
the threshold at 4 MiB (larger blocks are mapped, and unmapped when freed; smaller ones come
from the heap and are reused, as before: at glibc's initial 128 KiB, mapping every list of a
reload cost a change at 10,000 Routes a tenth more time) and returns the pages the first build
freed (``malloc_trim``). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
from typing import Any

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD = 4 << 20

_LIBC: Any = None
try:
    _LIBC = ctypes.CDLL(None)  # the process's own symbols: the C library's among them
    _LIBC.mallopt, _LIBC.malloc_trim  # noqa: B018 (glibc's, or not glibc)
except (OSError, AttributeError):
    _LIBC = None


def settle_heap() -> bool:
    """True if it could (glibc)."""
    if _LIBC is None:
        return False
    _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    _LIBC.malloc_trim(0)
    return True
