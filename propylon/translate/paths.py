"""File paths in resources are relative to the YAML file that defines the resource."""

from __future__ import annotations

import os

from propylon.config import Resource


def resolve_path(path: str, resource: Resource) -> str:
    """``path`` made absolute against the directory of ``resource``'s file (or the current
    directory for resources that came from elsewhere, such as the control plane)."""
    if os.path.isabs(path):
        return path
    source = resource.source
    base = os.path.dirname(os.path.abspath(source.file)) if source is not None else os.getcwd()
    return os.path.normpath(os.path.join(base, path))
