"""What a process loads before it reads its configuration: ``propylon run``'s supervisor and
``propylon validate`` do not import the data plane's modules (the worker is spawned with
``proxy.worker_entry``), nor the libraries only some configurations use (redis-py, Jinja2,
cryptography's X.509, h2), each loaded when first used. Measured in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

LOADED_LATER = ("propylon.proxy.worker", "propylon.proxy.h1.server", "redis", "jinja2",
                "cryptography.x509", "h2.connection")


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
