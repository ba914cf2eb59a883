"""The cyclic garbage collector paused while a configuration is built.

Loading, translating, encoding and compiling a large configuration allocate hundreds of
thousands of objects that all stay alive; each allocation burst triggers collections that scan
every one of them again, so a build of 10,000 routes spent more than half of its time in the
collector (docs/performance.md, "Configuration at scale"). Nothing of a build's garbage needs
the cyclic collector to be freed soon, so it is paused for the build and resumes after.
Pauses nest, in one thread or several (the control plane translates on one and validates
an API batch on another): the collector resumes when the last of them ends, and only if it
was running when the first began.

What the build left alive is then frozen (``gc.freeze``: moved out of the generations the
collector scans) before the collector resumes. Otherwise the first collections after a pause
scan every object it allocated, once per generation, and the heap of a large configuration
again on every later full collection: about a second per pass at 10,000 Routes, taken by
whatever code allocates next (an import, the event loop). Freezing costs nothing; its price
is that a reference cycle among frozen objects is never collected. Builds make no cycles (a
reload of 1,000 Routes, translated and compiled, leaves no cyclic garbage: measured with
``gc.collect()``), and what they stop using is freed by reference counting as before.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0  # pauses in progress, in every thread
_resume = False  # whether the collector was running when the first of them began


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            if _resume:
                gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.freeze()
                gc.enable()
