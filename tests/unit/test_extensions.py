"""The compiled hot path runs when it is built; PROPYLON_NO_EXTENSIONS runs the .py files.

scripts/test builds the extensions (scripts/_venv.sh) and refuses to go on without them, then
runs the suite twice: compiled, and with ``PROPYLON_NO_EXTENSIONS=1``. Each pass checks here
that the modules it imported are the ones it meant to test.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import propylon
from propylon import _extensions
from propylon._extensions import COMPILED, SHARED_LIBRARY, build_is_current, extension_path

# (mypyc gives the modules that its shared library starts a __file__ in a wrong folder: the
# tests compare suffixes)
SHOW_FILES = ("import importlib, sys\n"
              "print(*(importlib.import_module(m).__file__ for m in sys.argv[1:]))")


def imported_files(env: dict[str, str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", SHOW_FILES, *COMPILED], env=env,
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return out.split()


def environment(**changes: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in changes.items():
        env.pop(name, None)
        if value is not None:
            env[name] = value
    return env


def test_this_process_runs_the_build_it_says_it_runs() -> None:
    expected = extension_path("x").suffix if propylon.EXTENSIONS else ".py"
    for module in COMPILED:
        path = importlib.import_module(module).__file__
        assert path is not None and path.endswith(expected), (module, path)
    if _extensions.disabled_by_environment():
        assert not propylon.EXTENSIONS


def test_no_extensions_imports_every_compiled_module_from_its_source() -> None:
    files = imported_files(environment(PROPYLON_NO_EXTENSIONS="1"))
    assert files == [str(_extensions.source_path(m)) for m in COMPILED]


def test_a_current_build_is_used_when_not_disabled() -> None:
    if not build_is_current():
        pytest.skip("no current build here (scripts/_venv.sh builds it; scripts/test requires it)")
    files = imported_files(environment(PROPYLON_NO_EXTENSIONS=None))
    assert len(files) == len(COMPILED)
    assert all(path.endswith(extension_path("x").suffix) for path in files), files
    zero = imported_files(environment(PROPYLON_NO_EXTENSIONS="0"))
    assert zero == files


def fake_build(root: Path, source_tree: bool = True) -> None:
    if source_tree:
        (root / "setup.py").write_text("")
    for module in (*COMPILED, SHARED_LIBRARY):
        source = _extensions.source_path(module, root)
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text("")
        os.utime(source, (1_000, 1_000))
        extension_path(module, root).write_bytes(b"")
        os.utime(extension_path(module, root), (2_000, 2_000))


def test_a_build_is_current_when_every_extension_is_newer_than_its_source(
        tmp_path: Path) -> None:
    fake_build(tmp_path)
    assert build_is_current(tmp_path)


def test_a_missing_extension_or_shared_library_means_no_build(tmp_path: Path) -> None:
    fake_build(tmp_path)
    extension_path(COMPILED[-1], tmp_path).unlink()
    assert not build_is_current(tmp_path)
    fake_build(tmp_path)
    extension_path(SHARED_LIBRARY, tmp_path).unlink()
    assert not build_is_current(tmp_path)


@pytest.mark.parametrize("edited", [COMPILED[0], "propylon.runtime.compiled"])
def test_a_source_edited_after_the_build_means_no_build(tmp_path: Path, edited: str) -> None:
    """Compiled or not: the build checks the types other modules declare, as they were."""
    fake_build(tmp_path)
    source = _extensions.source_path(edited, tmp_path)
    source.write_text("")
    os.utime(source, (3_000, 3_000))
    assert not build_is_current(tmp_path)


def test_an_installed_package_uses_its_extensions_whatever_the_files_times(
        tmp_path: Path) -> None:
    """pip writes a wheel's ``.py`` files after its extensions: no ``setup.py`` beside the
    package, no times compared; a missing extension still means none."""
    fake_build(tmp_path, source_tree=False)
    source = _extensions.source_path(COMPILED[0], tmp_path)
    os.utime(source, (3_000, 3_000))
    assert build_is_current(tmp_path)
    extension_path(SHARED_LIBRARY, tmp_path).unlink()
    assert not build_is_current(tmp_path)
