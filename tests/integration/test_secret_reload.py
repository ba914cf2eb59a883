"""Hot reload of secret files: a rotated secret is served without a restart, a missing one is
refused (logged with the file and the resource) while the last good configuration keeps
serving, and the set of watched files follows the configuration.

The secret files live outside the configuration folder, so only the secret watcher sees them.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import resources as r
from tests.support.client import roundtrip
from tests.support.gateway import Gateway
from tests.support.net import poll_until

GatewayFactory = Callable[..., Gateway]
OLD, NEW = "k-old-0123456789", "k-new-9876543210"
WAIT = 5.0  # a rotation is served well within this (debounce 200 ms + build + install)


def consumer(name: str, api_keys: tuple[Path, ...] = (),
             basic: tuple[tuple[str, Path], ...] = ()) -> dict[str, Any]:
    """A Consumer whose API keys and basic-auth passwords are read from the files given."""
    credentials: dict[str, Any] = {}
    if api_keys:
        credentials["apiKeys"] = [{"secretRef": {"file": str(f)}} for f in api_keys]
    if basic:
        credentials["basicAuth"] = [
            {"username": user, "secretRef": {"file": str(f)}} for user, f in basic
        ]
    return {"apiVersion": r.API, "kind": "Consumer",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"credentials": credentials}}


def config(*consumers: dict[str, Any]) -> Callable[[int], str]:
    """/key behind apiKey, /basic behind basicAuth, both answered directly."""
    rules = [
        r.rule({"prefix": "/key"}, directResponse={"status": 200, "body": "key"},
               policies=[{"apiKey": {"header": "x-api-key"}}]),
        r.rule({"prefix": "/basic"}, directResponse={"status": 200, "body": "basic"},
               policies=[{"basicAuth": {"realm": "shop"}}]),
    ]
    return lambda port: r.dump(r.gateway(port), r.route("main", rules=rules), *consumers)


def key_status(gw: Gateway, key: str) -> int:
    return roundtrip(gw.port, "GET", "/key", headers={"x-api-key": key}).status


def basic_status(gw: Gateway, user: str, password: str) -> int:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return roundtrip(gw.port, "GET", "/basic",
                     headers={"authorization": f"Basic {token}"}).status


def accepts_only(gw: Gateway, good: str, *bad: str) -> bool:
    return key_status(gw, good) == 200 and all(key_status(gw, b) == 401 for b in bad)


# -- the ways a secret file gets replaced -----------------------------------------------------
def write_in_place(path: Path, value: str) -> None:
    """Truncate and rewrite the same inode (``echo new > key``)."""
    with open(path, "w") as handle:
        handle.write(value + "\n")


def rename_over(path: Path, value: str) -> None:
    """Write a new file beside it and rename it over the old one (a new inode)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(value + "\n")
    os.replace(tmp, path)


def kubernetes_layout(folder: Path, name: str, value: str) -> Path:
    """A Secret volume as the kubelet lays it out: ``name -> ..data/name``, ``..data -> ..TS``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "..2024_01_01_00_00_00.000000001"
    data.mkdir()
    (data / name).write_text(value + "\n")
    os.symlink(data.name, folder / "..data")
    os.symlink(f"..data/{name}", folder / name)
    return folder / name


def kubernetes_swap(path: Path, value: str) -> None:
    """The kubelet's atomic update: new timestamped folder, ``..data`` renamed over, old gone."""
    folder = path.parent
    old = folder / os.readlink(folder / "..data")
    new = folder / f"..2024_01_01_00_00_00.{time.monotonic_ns()}"
    new.mkdir()
    (new / path.name).write_text(value + "\n")
    os.symlink(new.name, folder / "..data_tmp")
    os.replace(folder / "..data_tmp", folder / "..data")
    shutil.rmtree(old)


ROTATIONS = {"in-place": write_in_place, "rename": rename_over, "symlink-swap": kubernetes_swap}


@pytest.mark.parametrize("how", list(ROTATIONS))
def test_rotated_api_key_is_served_without_restart(
    gateways: GatewayFactory, tmp_path: Path, how: str
) -> None:
    folder = tmp_path / "secrets"
    if how == "symlink-swap":
        key = kubernetes_layout(folder, "api.key", OLD)
    else:
        folder.mkdir()
        key = folder / "api.key"
        key.write_text(OLD + "\n")
    gw = gateways(config(consumer("acme", api_keys=(key,))), watch=True)
    pid, version = gw.pid, gw.version()
    assert accepts_only(gw, OLD, NEW)

    started = time.monotonic()
    ROTATIONS[how](key, NEW)
    poll_until(lambda: accepts_only(gw, NEW, OLD), WAIT, message=f"new key served ({how})")
    print(f"\n{how}: rotated key served after {time.monotonic() - started:.2f}s")
    assert gw.pid == pid and gw.process is not None and gw.process.poll() is None
    assert gw.version() != version
    assert gw.reloads() == (1, 0)
    assert "secret file(s) changed, reloading: " + str(key) in gw.stderr_text()


def test_rotated_basic_auth_password_is_served(gateways: GatewayFactory, tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    folder.mkdir()
    password = folder / "alice.password"
    password.write_text("old-pass\n")
    gw = gateways(config(consumer("acme", basic=(("alice", password),))), watch=True)
    pid = gw.pid
    assert basic_status(gw, "alice", "old-pass") == 200
    rename_over(password, "new-pass")
    poll_until(lambda: basic_status(gw, "alice", "new-pass") == 200, WAIT,
               message="new password served")
    assert basic_status(gw, "alice", "old-pass") == 401
    assert gw.pid == pid and gw.reloads() == (1, 0)


def test_missing_or_empty_secret_is_refused_and_the_old_config_keeps_serving(
    gateways: GatewayFactory, tmp_path: Path
) -> None:
    folder = tmp_path / "secrets"
    folder.mkdir()
    key = folder / "api.key"
    key.write_text(OLD + "\n")
    gw = gateways(config(consumer("acme", api_keys=(key,))), watch=True)
    pid, version = gw.pid, gw.version()

    key.unlink()
    poll_until(lambda: gw.reloads() == (0, 1), WAIT, message="deletion refused")
    log = gw.stderr_text()
    assert "configuration refused" in log
    assert f"secret file {key} needed by Consumer default/acme" in log
    assert "No such file or directory" in log
    assert str(key) in gw.stats()["reloads"]["last_error"]
    assert gw.version() == version and accepts_only(gw, OLD, NEW)  # last good config serves

    key.write_text("")  # re-created empty: no key is never meant
    poll_until(lambda: gw.reloads() == (0, 2), WAIT, message="empty file refused")
    assert f"secret file {key} is empty" in gw.stderr_text()
    assert gw.version() == version and accepts_only(gw, OLD, NEW)

    write_in_place(key, NEW)  # and the next good secret is taken
    poll_until(lambda: accepts_only(gw, NEW, OLD), WAIT, message="recovered")
    assert gw.pid == pid and gw.reloads() == (1, 2)
    assert OLD not in gw.stderr_text() and NEW not in gw.stderr_text()  # never logged


def test_watched_secret_files_follow_the_config(gateways: GatewayFactory, tmp_path: Path) -> None:
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    folder_a.mkdir()
    folder_b.mkdir()
    key_a, key_b = folder_a / "api.key", folder_b / "api.key"
    key_a.write_text(OLD)
    key_b.write_text(NEW)
    gw = gateways(config(consumer("acme", api_keys=(key_a,))), watch=True)
    pid = gw.pid
    assert accepts_only(gw, OLD, NEW)

    # the config now reads b (in another folder) instead of a
    gw.write_config(config(consumer("acme", api_keys=(key_b,))))
    poll_until(lambda: accepts_only(gw, NEW, OLD), WAIT, message="b's key served")
    assert gw.reloads() == (1, 0)

    # a is no longer watched: changing it reloads nothing
    rename_over(key_a, "k-a-ignored-000001")
    # b is: a change there is served
    rename_over(key_b, "k-b-rotated-000002")
    poll_until(lambda: accepts_only(gw, "k-b-rotated-000002", NEW), WAIT,
               message="b's rotated key served")
    time.sleep(0.5)  # long enough for a's change to have been acted on, were it watched
    assert key_status(gw, "k-a-ignored-000001") == 401
    assert gw.reloads() == (2, 0)

    # adding a Consumer adds its file; deleting a watched file is refused, naming it
    key_c = folder_a / "c.key"
    key_c.write_text("k-c-0000000000001")
    gw.write_config(config(consumer("acme", api_keys=(key_b,)),
                           consumer("carol", api_keys=(key_c,))))
    poll_until(lambda: key_status(gw, "k-c-0000000000001") == 200, WAIT, message="carol served")
    rename_over(key_c, "k-c-0000000000002")
    poll_until(lambda: accepts_only(gw, "k-c-0000000000002", "k-c-0000000000001"), WAIT,
               message="carol's rotated key served")
    assert gw.reloads() == (4, 0)
    key_c.unlink()
    poll_until(lambda: gw.reloads() == (4, 1), WAIT, message="carol's deletion refused")
    assert f"secret file {key_c} needed by Consumer default/carol" in gw.stderr_text()
    assert accepts_only(gw, "k-c-0000000000002") and accepts_only(gw, "k-b-rotated-000002")
    assert gw.pid == pid
