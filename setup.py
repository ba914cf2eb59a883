"""Builds the compiled hot path with mypyc (docs/performance.md, "The compiled hot path") and
the C module that builds plain YAML documents from libyaml's events (``config/_libyaml.c``).

The metadata is in pyproject.toml; this file only adds the extension modules. They are built by
the commands that build code (``build_ext``, a wheel, an editable install), never when pip only
asks for metadata, and they are optional: without mypy or a C compiler, or with
``PROPYLON_NO_EXTENSIONS=1``, the package installs as pure Python and runs from its ``.py``
files. ``python setup.py build_ext --inplace`` puts them beside the sources (scripts/_venv.sh).
"""

from __future__ import annotations

import os
import runpy
import sys
import warnings
from pathlib import Path

from setuptools import Extension, setup

ROOT = Path(__file__).parent
BUILD_COMMANDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install"}


DECLARED = runpy.run_path(str(ROOT / "propylon" / "_extensions.py"))


def building() -> bool:
    """A command that builds code, and extensions not turned off (``PROPYLON_NO_EXTENSIONS``)."""
    return (os.environ.get(DECLARED["DISABLE_VARIABLE"], "") in ("", "0")
            and bool(BUILD_COMMANDS & set(sys.argv[1:])))


def hot_path_extensions() -> list[Extension]:
    if not building():
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        warnings.warn(f"mypyc is not installed ({exc}): pure-Python build", stacklevel=1)
        return []
    paths = [str(Path(*module.split(".")).with_suffix(".py")) for module in DECLARED["COMPILED"]]
    group = DECLARED["SHARED_LIBRARY"].removesuffix("__mypyc")
    try:
        # type errors elsewhere in the package (modules only imported) do not stop the build
        extensions = mypycify(["--follow-imports=silent", *paths], opt_level="3",
                              group_name=group)
    except (Exception, SystemExit) as exc:  # mypyc exits on a type error
        warnings.warn(f"mypyc could not compile the hot path ({exc}): pure-Python build",
                      stacklevel=1)
        return []
    for extension in extensions:
        extension.optional = True  # a failed C build leaves the pure-Python modules in use
    return extensions


def yaml_extension() -> list[Extension]:
    """``propylon.config._libyaml``, optional like the others: without libyaml's headers
    (Debian's libyaml-dev) configurations are parsed by PyYAML alone, several times slower."""
    if not building():
        return []
    return [Extension("propylon.config._libyaml", ["propylon/config/_libyaml.c"],
                      libraries=["yaml"], extra_compile_args=["-O2"], optional=True)]


setup(ext_modules=[*hot_path_extensions(), *yaml_extension()])
