"""Plugin packages made on the fly: modules plus a ``.dist-info`` folder with real entry points
in group ``propylon.filters``, in a folder put on ``sys.path`` (``PYTHONPATH`` for another
process). ``importlib.metadata`` finds them as it finds an installed package, with no pip."""

from __future__ import annotations

import os
from pathlib import Path


def write_dist(root: Path, package: str, entry_points: dict[str, str],
               modules: dict[str, str], version: str = "1.0") -> Path:
    """Write ``modules`` (``{"pkg_mod": source}``, one file each) and the distribution
    ``package`` declaring ``entry_points`` (``{name: "module:Class"}``) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(source, encoding="utf-8")
    info = root / f"{package.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n", encoding="utf-8")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[propylon.filters]\n{lines}", encoding="utf-8")
    return root


def env_with(root: Path) -> dict[str, str]:
    """``os.environ`` with ``root`` first on ``PYTHONPATH``."""
    paths = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
