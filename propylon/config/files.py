"""The configuration files a list of paths names, and their texts.

A path is a file, or a folder whose ``*.yaml`` and ``*.yml`` files are read recursively, in
sorted order, except those whose path below the folder has a hidden part (a name starting
with "."): a Kubernetes ConfigMap or Secret mounted as a folder holds each file twice more,
in ``..data/`` and the ``..<timestamp>/`` folder it points to, and the visible names are
links to those; a ``.git`` or ``.github`` folder holds no gateway configuration. A path
given is read whatever its name. A path that names nothing, or a file that cannot be read as
UTF-8, is one ``ConfigError``; the others are read all the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from propylon.config.errors import ConfigError

SUFFIXES = (".yaml", ".yml")


def _config_files(paths: Sequence[str | Path], errors: list[ConfigError]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from folder_files(path)
        elif path.is_file():
            yield path
        else:
            errors.append(ConfigError(str(path), None, None, None, None, "no such file or folder"))


def folder_files(folder: Path, suffixes: tuple[str, ...] = SUFFIXES) -> list[Path]:
    """The files below ``folder`` with one of ``suffixes``, in sorted order, those with a
    hidden part in their path below it left out (see the module doc)."""
    return sorted(
        p for p in folder.rglob("*")
        if p.suffix in suffixes and not _hidden(p.relative_to(folder)) and p.is_file())


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def may_change_texts(path: str | Path, given: Sequence[str | Path]) -> bool:
    """Whether a change at ``path`` (under the paths ``given``, or one of them) may change what
    ``read_texts(given)`` reads: a file with a configuration suffix, a path given itself, a
    folder, or a path that no longer exists (a folder moved away may have held configuration
    files). A file of any other name (a log written next to the configuration, say) may not."""
    changed = Path(os.path.abspath(path))
    if changed.suffix in SUFFIXES or any(changed == Path(os.path.abspath(g)) for g in given):
        return True
    return changed.is_dir() or not changed.exists()


def read_texts(paths: Sequence[str | Path], errors: list[ConfigError]) -> list[tuple[str, str]]:
    """``(file name, text)`` of each configuration file of ``paths``, in order."""
    texts = []
    for file in _config_files(paths, errors):
        try:
            texts.append((str(file), file.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            errors.append(ConfigError(str(file), None, None, None, None, message))
    return texts
