"""How the control plane's log names its store: an SQLite URL with the file it opens."""

from __future__ import annotations

import os
from pathlib import Path

from propylon.controlplane.store import store_location


def test_an_sqlite_store_is_shown_with_its_absolute_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert store_location("sqlite:///tmp/cp.db") == (
        f"sqlite:///tmp/cp.db (file {os.path.join(tmp_path, 'tmp', 'cp.db')})")
    assert store_location("sqlite:////var/lib/cp.db") == (
        "sqlite:////var/lib/cp.db (file /var/lib/cp.db)")
    assert store_location("etcd://127.0.0.1:2379") == "etcd://127.0.0.1:2379"
