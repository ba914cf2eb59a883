"""The compiled hot path: which modules mypyc builds, and whether this process uses them.

``setup.py`` compiles ``COMPILED`` with mypyc into one shared library (``SHARED_LIBRARY``) and a
small extension module beside each ``.py`` (docs/performance.md, "The compiled hot path"). The
``.py`` files stay the source of truth: this process imports all of them from source instead
when ``PROPYLON_NO_EXTENSIONS`` is set (to anything but ``0``), when an extension is missing, or,
in a source tree, when a source of the package is newer than the build (an edit since). It is
all or nothing: the compiled modules call each other's classes directly through the shared
library, so one module from source and its neighbours compiled would not fit together.

Nothing here imports another module of the package: ``propylon/__init__.py`` runs it first.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

# Per-request modules, in the order a request meets them, and the runtime objects they read
# (routes, clusters, statistics: compiled classes give compiled code their fields directly,
# where an interpreted object's attribute is a dictionary-and-descriptor lookup).
COMPILED = (
    "propylon.proxy.field_names",
    "propylon.proxy.shared_values",
    "propylon.proxy.request_fields",
    "propylon.proxy.clock",
    "propylon.proxy.worker_state",
    "propylon.proxy.h1.server",
    "propylon.proxy.h1.framing",
    "propylon.proxy.session",
    "propylon.proxy.forwarder",
    "propylon.proxy.pool",
    "propylon.proxy.h1.client",
    # HTTP/2 and gRPC, both sides: the code around the h2 library's state machine
    "propylon.proxy.h2.server",
    "propylon.proxy.h2.client",
    "propylon.proxy.h2.pool",
    "propylon.proxy.http11",
    "propylon.proxy.batch",
    "propylon.proxy.body",
    "propylon.runtime.balancer",
    "propylon.runtime.router",
    "propylon.runtime.compiled",
    "propylon.runtime.health",
    "propylon.runtime.retry",
    "propylon.observability.metrics",
    "propylon.observability.request_id",
    # the policies a request meets most, and the filter contract they implement
    "propylon.filters.base",
    "propylon.filters._common",
    "propylon.filters._consumer_acl",
    "propylon.filters._buckets",
    "propylon.filters.rate_limit",
    "propylon.filters.api_key",
    "propylon.filters.basic_auth",
    "propylon.filters.jwt_auth",
    "propylon.filters.headers",
    "propylon.filters.ip_filter",
    "propylon.filters.cors",
    "propylon.filters.request_limits",
)
SHARED_LIBRARY = "propylon._hotpath__mypyc"  # mypyc's name for group "propylon._hotpath"
DISABLE_VARIABLE = "PROPYLON_NO_EXTENSIONS"

SOURCE_ROOT = Path(__file__).parent.parent  # where the ``propylon`` folder is
_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]  # this interpreter's tag, e.g. .cpython-311-…


def source_path(module: str, root: Path = SOURCE_ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def extension_path(module: str, root: Path = SOURCE_ROOT) -> Path:
    return source_path(module, root).with_suffix(_SUFFIX)


def disabled_by_environment() -> bool:
    return os.environ.get(DISABLE_VARIABLE, "") not in ("", "0")


def build_is_current(root: Path = SOURCE_ROOT) -> bool:
    """Every extension is there and, in a source tree (``setup.py`` beside the package: a
    clone, an editable install), no source of the package is newer than the oldest one.

    Any module counts, not only the compiled ones: the compiled code checks the types that
    other modules declare (an attribute's class, an int) as they were when it was built. An
    installed package (a wheel) is not edited, and its files' times say nothing: pip writes
    the ``.py`` files after the extensions, so they always looked newer and every install
    ran the pure-Python modules.
    """
    try:
        built = min(extension_path(module, root).stat().st_mtime
                    for module in (*COMPILED, SHARED_LIBRARY))
        if not (root / "setup.py").is_file():
            return True
        newest = max(entry.stat().st_mtime for entry in (root / "propylon").rglob("*.py"))
    except (OSError, ValueError):  # an extension is missing; no source at all
        return False
    return newest <= built


class SourceFinder:
    """A meta path finder that imports the compiled modules from their ``.py`` files."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules = frozenset(modules)

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname not in self.modules:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


def install() -> bool:
    """Called once by ``propylon/__init__.py``; true when the compiled modules are in use."""
    if not disabled_by_environment() and build_is_current():
        return True
    sys.meta_path.insert(0, SourceFinder(COMPILED))
    return False
