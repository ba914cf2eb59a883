"""Which secret files a build depends on, how their changes are seen, and when a reload that
a secret change causes is refused (``standalone``, ``translate.consumers``, ``FileSource``)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from propylon.file_source import FileSource
from propylon.proxy.supervisor import Supervisor
from propylon.standalone import (
    BuildResult,
    build_snapshot,
    changed_secret_files,
    secret_failures,
    secret_stamps,
    secret_watch_dirs,
)

CONFIG = """apiVersion: propylon.dev/v1
kind: Gateway
metadata: {name: edge}
spec:
  listeners: [{name: web, port: 8080}]
  policies:
    - headers:
        request:
          set:
            authorization: {secretRef: {file: egress.token}, prefix: "Bearer "}
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: api}
spec:
  rules:
    - name: a
      directResponse: {status: 200}
      policies: [{apiKey: {header: x-api-key}}]
    - name: b
      directResponse: {status: 200}
---
apiVersion: propylon.dev/v1
kind: Consumer
metadata: {name: acme}
spec:
  credentials:
    apiKeys: [{secretRef: {file: keys/acme.key}}]
    basicAuth: [{username: alice, secretRef: {env: PROPYLON_TEST_ALICE}}]
---
apiVersion: propylon.dev/v1
kind: Consumer
metadata: {name: broken}
spec:
  credentials:
    apiKeys: [{secretRef: {env: PROPYLON_TEST_NOT_SET}}]
"""


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PROPYLON_TEST_ALICE", "s3cret")
    monkeypatch.delenv("PROPYLON_TEST_NOT_SET", raising=False)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "keys").mkdir()
    (tmp_path / "conf" / "gateway.yaml").write_text(CONFIG)
    (tmp_path / "conf" / "keys" / "acme.key").write_text("k-acme-1\n")
    (tmp_path / "conf" / "egress.token").write_text("tok-1\n")
    return tmp_path / "conf"


def test_a_build_records_every_secret_it_resolved(tree: Path) -> None:
    result = build_snapshot([tree])
    assert result.snapshot is not None and result.secrets is not None
    found = {(r.needed_by, r.reference, r.error) for r in result.secrets}
    assert found == {
        ("Gateway default/edge headers request.set.authorization",
         f"secret file {tree / 'egress.token'}", None),  # once, though two rules use it
        ("Consumer default/acme spec.credentials.apiKeys[0]",
         f"secret file {tree / 'keys' / 'acme.key'}", None),
        ("Consumer default/acme spec.credentials.basicAuth[0]",
         "environment variable PROPYLON_TEST_ALICE", None),
        ("Consumer default/broken spec.credentials.apiKeys[0]",
         "environment variable PROPYLON_TEST_NOT_SET",
         "environment variable PROPYLON_TEST_NOT_SET is not set"),
    }
    stamps = secret_stamps(result.secrets)  # files only, with their identity as read
    assert set(stamps) == {str(tree / "egress.token"), str(tree / "keys" / "acme.key")}
    assert all(stamp is not None for stamp in stamps.values())
    assert changed_secret_files(stamps) == []


def test_a_refused_configuration_records_nothing(tree: Path) -> None:
    # a YAML syntax error refuses the whole configuration (a schema error is contained)
    (tree / "gateway.yaml").write_text(CONFIG + "\n---\nspec: [unclosed\n")
    assert build_snapshot([tree]).secrets is None


@pytest.mark.parametrize("content", ["", "  \n", b"\xff\xfe"], ids=["empty", "blank", "binary"])
def test_an_empty_or_undecodable_secret_file_is_a_failure(tree: Path, content: str | bytes) -> None:
    key = tree / "keys" / "acme.key"
    key.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = build_snapshot([tree])
    assert result.secrets is not None
    failures = secret_failures(result.secrets)
    message = failures[("Consumer default/acme spec.credentials.apiKeys[0]", f"secret file {key}")]
    assert message.startswith(f"secret file {key} needed by Consumer default/acme")
    assert "empty" in message or "not UTF-8" in message
    assert any("Consumer default/acme: Invalid" in w for w in result.warnings)


def test_changes_are_seen_whatever_the_way_the_file_is_replaced(tree: Path) -> None:
    key = tree / "keys" / "acme.key"
    result = build_snapshot([tree])
    assert result.secrets is not None
    stamps = secret_stamps(result.secrets)
    key.write_text("k-acme-2\n")  # in place
    assert changed_secret_files(stamps) == [str(key)]
    stamps = secret_stamps(build_snapshot([tree]).secrets or ())
    (tree / "keys" / "new").write_text("k-acme-3\n")
    os.replace(tree / "keys" / "new", key)  # rename over
    assert changed_secret_files(stamps) == [str(key)]
    stamps = secret_stamps(build_snapshot([tree]).secrets or ())
    key.unlink()  # deleted
    assert changed_secret_files(stamps) == [str(key)]
    missing = secret_stamps(build_snapshot([tree]).secrets or ())
    assert missing[str(key)] is None
    assert changed_secret_files(missing) == []  # still missing: no change
    key.write_text("k-acme-4\n")  # created again
    assert changed_secret_files(missing) == [str(key)]


def test_watched_folders(tmp_path: Path) -> None:
    (tmp_path / "k8s" / "..2024").mkdir(parents=True)
    (tmp_path / "k8s" / "..2024" / "key").write_text("x")
    os.symlink("..2024", tmp_path / "k8s" / "..data")
    os.symlink("..data/key", tmp_path / "k8s" / "key")
    (tmp_path / "plain").mkdir()
    dirs = secret_watch_dirs([
        str(tmp_path / "k8s" / "key"),  # its folder, and the one it resolves to now
        str(tmp_path / "plain" / "key"),  # not there yet: its folder
        str(tmp_path / "gone" / "deeper" / "key"),  # no folder: the nearest one that exists
    ])
    assert dirs == tuple(sorted({
        str(tmp_path / "k8s"), str(tmp_path / "k8s" / "..2024"), str(tmp_path / "plain"),
        str(tmp_path),
    }))


def test_supervisor_refuses_a_reload_that_breaks_a_secret(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[BuildResult] = []

    def build() -> BuildResult:
        builds.append(build_snapshot([tree]))
        return builds[-1]

    async def scenario() -> None:
        supervisor, source = Supervisor(), FileSource(build)
        monkeypatch.setattr(supervisor, "start_workers", lambda: None)  # no processes here
        await source.start(supervisor)
        key = str(tree / "keys" / "acme.key")
        assert set(source.secret_stamps) == {key, str(tree / "egress.token")}
        assert await source.reload_if_secrets_changed(supervisor) is None  # nothing changed
        first = supervisor.snapshot
        assert first is not None

        os.unlink(key)
        assert await source.reload_if_secrets_changed(supervisor) is False
        assert supervisor.snapshot is first  # the old configuration keeps serving
        assert supervisor.reloads.failed == 1
        error = supervisor.reloads.last_error
        assert f"secret file {key} needed by Consumer default/acme" in error
        assert "PROPYLON_TEST_NOT_SET" not in error  # failing from the start: not news
        assert await source.reload_if_secrets_changed(supervisor) is None  # still missing

        Path(key).write_text("k-acme-2\n")
        assert await source.reload_if_secrets_changed(supervisor) is True
        assert supervisor.snapshot is not first
        assert supervisor.reloads.succeeded == 1

        # a config change that drops the Consumer drops its file from the watched set
        source.secrets_moved.clear()
        (tree / "gateway.yaml").write_text(CONFIG.split("---\napiVersion: propylon.dev/v1\n"
                                                        "kind: Consumer")[0])
        assert await source.reload(supervisor) is True
        assert set(source.secret_stamps) == {str(tree / "egress.token")}
        assert source.secrets_moved.is_set()
        if supervisor.health is not None:
            supervisor.health.stop()
        supervisor.sockets.close()  # the supervisor bound the listeners' sockets

    asyncio.run(scenario())


def test_a_secret_written_just_before_the_watch_runs_is_read_once_it_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch of the secret folders starts after the check for changes already made: a
    file replaced between the two is read once the watch says it runs (it would otherwise
    wait for the next change in that folder)."""
    from propylon import file_source
    from tests.support.net import free_port
    from tests.support.watching import watch_until

    (tmp_path / "egress.token").write_text("tok-1\n")
    (tmp_path / "gateway.yaml").write_text(
        CONFIG.split("---")[0].replace("port: 8080", f"port: {free_port()}, address: 127.0.0.1"))
    checks: list[tuple[str, ...]] = []

    def changed_then_written(stamps: dict[str, object]) -> tuple[str, ...]:
        changed = tuple(changed_secret_files(stamps))  # type: ignore[arg-type]
        checks.append(changed)
        if len(checks) == 1:  # after the first check, before the watch has started
            (tmp_path / "egress.token").write_text("tok-2\n")
        return changed

    def token(supervisor: Supervisor) -> str:
        assert supervisor.snapshot is not None
        [policy] = supervisor.snapshot.gateways[0].default_policies
        return repr(policy.spec)

    async def scenario() -> None:
        supervisor = Supervisor()
        monkeypatch.setattr(supervisor, "start_workers", lambda: None)  # no processes here
        source = FileSource(lambda: build_snapshot([tmp_path]), [str(tmp_path)])
        await source.start(supervisor)
        first = token(supervisor)
        assert "tok-1" in first
        monkeypatch.setattr(file_source, "changed_secret_files", changed_then_written)
        await watch_until(supervisor, source._watch_secrets(supervisor),
                          lambda: "tok-2" in token(supervisor),
                          "the secret written meanwhile was never read",
                          10 * file_source.WATCH_READY_MS / 1000)
        assert supervisor.reloads.succeeded == 1

    asyncio.run(scenario())
