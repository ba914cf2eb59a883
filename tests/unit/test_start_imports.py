"""What a process loads before it reads its configuration: ``propylon run``'s supervisor and
``propylon validate`` do not import the data plane's modules (the worker is spawned with
``proxy.worker_entry``), nor the libraries only some configurations use (redis-py, Jinja2,
cryptography's X.509, h2), nor what serves only once the first configuration does, each
loaded when first used. Measured in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

LOADED_LATER = ("propylon.proxy.worker", "propylon.proxy.h1.server", "redis", "jinja2",
                "cryptography.x509", "h2.connection",
                # the supervisor's, once serving or first used: the compiler (a check with
                # more than one worker), the admin server, Prometheus' client (at a scrape),
                # the health checker (at the first install)
                "propylon.runtime.compile", "propylon.admin.server", "prometheus_client",
                "propylon.proxy.health_checker")


def test_the_supervisor_and_validate_load_only_what_they_use() -> None:
    code = (
        "import sys\n"
        "import propylon.cli.main, propylon.cli.problems, propylon.file_source\n"
        "import propylon.proxy.supervisor, propylon.standalone\n"
        f"print([m for m in {LOADED_LATER!r} if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_files_are_being_parsed_before_the_resource_models_are_imported(
        tmp_path: Path) -> None:
    """``run`` and ``validate`` start parsing on the other cores (``parse_pool.read_ahead``)
    from a process that has parsed its command line only: pydantic and the resource models,
    a fifth of a second or more to import, come while the children parse."""
    for n in range(8):
        (tmp_path / f"routes-{n}.yaml").write_text("x: y\n" * 20_000)  # enough to fork
    code = (
        "import os, sys\n"
        "import propylon.cli.main\n"
        "from propylon.config import parse_pool\n"
        f"parse_pool.read_ahead([{str(tmp_path)!r}])\n"
        "print(sorted(m for m in ('pydantic', 'propylon.config.loader', 'propylon.translate',"
        " 'propylon.filters') if m in sys.modules))\n"
        "print(len(parse_pool._AHEAD) == (len(os.sched_getaffinity(0)) > 1))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["[]", "True"], done.stdout + done.stderr


def test_every_name_propylon_config_exports_is_found_where_it_is_declared() -> None:
    """``propylon.config`` imports its names when first used: the table that says where each
    one is and ``__all__`` name the same names, and each resolves to its module's object."""
    import importlib

    import propylon.config as config

    assert sorted(config._WHERE) == sorted(config.__all__)
    for name, where in config._WHERE.items():
        assert getattr(config, name) is getattr(importlib.import_module(where), name)
