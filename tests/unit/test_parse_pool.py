"""YAML texts parsed in forked children (``config/parse_pool.py``) give exactly what parsing
them here gives: data, positions, errors, in file order; a child that cannot start or fails
leaves its share to this process; threads other than the main one never fork."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from propylon.config import load_paths, parse_pool
from propylon.config._yaml import parse_documents

ROUTE = """\
apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: r{i}, namespace: team}}
spec:
  hostnames: [h{i}.example]
  rules:
  - matches: [{{path: {{prefix: /p{i}}}}}]
    forward: {{backends: [{{upstream: up}}]}}
"""


def texts() -> list[tuple[str, str]]:
    found = [(f"f{n}.yaml", "---\n".join(ROUTE.format(i=n * 10 + i) for i in range(10)))
             for n in range(12)]
    found.append(("anchors.yaml", "a: &x {k: [1, 2]}\nb: *x\n---\nc: yes\nd: 1.10\n"))
    found.append(("broken.yaml", "a: 1\nb: [unclosed\n"))
    found.append(("bad-field.yaml", "x: 1\n---\n- list\n"))
    return found


def summary(parsed: list[parse_pool.Parsed]) -> list[object]:
    return [([(d.data, d.line, d.column, dict(d.marks)) for d in documents], errors)
            for documents, errors in parsed]


@pytest.fixture
def forking(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Fork for any amount of text, and count the forks."""
    monkeypatch.setattr(parse_pool, "PARALLEL_MIN_CHARS", 0)
    forks: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            forks.append(pid)
        return pid

    monkeypatch.setattr(parse_pool.os, "fork", fork)
    return forks


def test_children_give_what_parsing_here_gives(forking: list[int]) -> None:
    given = texts()
    expected = [parse_documents(text, name) for name, text in given]
    assert summary(parse_pool.parse_all(given)) == summary(expected)
    if parse_pool._processes(given) > 1:
        assert forking, "no child was forked"
    assert summary(parse_pool.parse_all(given[:1])) == summary(expected[:1])  # one text: here


def test_a_fork_refused_parses_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parse_pool, "PARALLEL_MIN_CHARS", 0)

    def refuse() -> int:
        raise OSError("fork refused")

    monkeypatch.setattr(parse_pool.os, "fork", refuse)
    given = texts()
    assert summary(parse_pool.parse_all(given)) == summary(
        [parse_documents(text, name) for name, text in given])


def test_a_child_that_fails_leaves_its_share_here(forking: list[int],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    given = texts()
    expected = summary([parse_documents(text, name) for name, text in given])
    parent = os.getpid()

    def fail_in_child(text: str, name: str) -> parse_pool.Parsed:
        if os.getpid() != parent:
            raise RuntimeError("the child fails")
        return parse_documents(text, name)

    monkeypatch.setattr(parse_pool, "parse_documents", fail_in_child)
    assert summary(parse_pool.parse_all(given)) == expected


def test_other_threads_do_not_fork(forking: list[int]) -> None:
    given = texts()
    got: list[list[parse_pool.Parsed]] = []
    thread = threading.Thread(target=lambda: got.append(parse_pool.parse_all(given)))
    thread.start()
    thread.join()
    assert not forking
    assert summary(got[0]) == summary([parse_documents(text, name) for name, text in given])


def test_load_paths_in_parallel_reports_errors_at_their_lines(
        forking: list[int], tmp_path: Path) -> None:
    for folder in ("serial", "parallel"):
        (tmp_path / folder).mkdir()
        for name, text in texts():
            (tmp_path / folder / name).write_text(text)
        (tmp_path / folder / "wrong-type.yaml").write_text(ROUTE.format(i=999).replace(
            "hostnames: [h999.example]", "hostnames: 7"))
    serial = load_paths([tmp_path / "serial"])
    assert not forking  # only when asked
    loaded = load_paths([tmp_path / "parallel"], parallel=True)
    assert forking
    assert len([r for r in loaded.resources if r.kind == "Route"]) == 120
    errors = {(Path(e.file).name, e.line) for e in loaded.errors}
    assert ("broken.yaml", 3) in errors
    assert ("wrong-type.yaml", 5) in errors  # the field's own line, found from the text
    assert errors == {(Path(e.file).name, e.line) for e in serial.errors}
    assert [r.model_dump() for r in loaded.resources] == [
        r.model_dump() for r in serial.resources]


def test_a_stuck_child_is_stopped_and_its_share_parsed_here(
        forking: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    given = texts()
    expected = summary([parse_documents(text, name) for name, text in given])
    parent = os.getpid()

    def hang_in_child(text: str, name: str) -> parse_pool.Parsed:
        if os.getpid() != parent:
            time.sleep(60)
        return parse_documents(text, name)

    monkeypatch.setattr(parse_pool, "parse_documents", hang_in_child)
    monkeypatch.setattr(parse_pool, "CHILD_GRACE", 0.2)
    started = time.monotonic()
    assert summary(parse_pool.parse_all(given)) == expected
    assert time.monotonic() - started < 30
    for pid in forking:  # killed and reaped
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_a_child_failing_midway_leaves_only_what_it_owes_here(
        forking: list[int], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What a child sent before it failed is used; the text it took and did not send, and
    those left, are parsed here."""
    given = texts()
    expected = summary([parse_documents(text, name) for name, text in given])
    parent = os.getpid()
    parsed_here: list[str] = []
    in_child = tmp_path / "child"

    def fail_on_the_second(text: str, name: str) -> parse_pool.Parsed:
        if os.getpid() != parent:
            with in_child.open("a") as log:
                log.write(name + "\n")
            if len(in_child.read_text().splitlines()) > 1:
                os._exit(3)
        else:
            parsed_here.append(name)
        return parse_documents(text, name)

    monkeypatch.setattr(parse_pool, "parse_documents", fail_on_the_second)
    # every text through parse_documents, so the child notes each one it takes (a plain
    # text it sent as plain documents was noted nowhere: seen on a loaded machine, where the
    # child sent several before this process parsed any)
    monkeypatch.setattr(parse_pool, "plain_documents", lambda text: None)
    assert summary(parse_pool.parse_all(given)) == expected
    assert forking
    taken = in_child.read_text().splitlines() if in_child.exists() else []
    if taken:  # the child took texts before this process had parsed them all
        assert taken[0] not in parsed_here  # sent before the child failed
        assert sorted(parsed_here + taken[:1]) == sorted(name for name, _ in given)
    assert len(parsed_here) == len(set(parsed_here))  # each text parsed here once at most


def test_children_take_texts_from_the_front_and_this_process_from_the_back() -> None:
    claims = parse_pool._Claims(5)
    try:
        assert claims.take(from_back=False) == 0
        assert claims.take(from_back=True) == 4
        assert claims.take(from_back=False) == 1
        assert claims.take(from_back=True) == 3
        assert claims.take(from_back=True) == 2
        assert claims.take(from_back=False) is None
        assert claims.take(from_back=True) is None
    finally:
        claims.close()


def test_a_slow_process_leaves_more_texts_to_the_other(
        forking: list[int], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No share is fixed beforehand: the process that parses faster parses more."""
    given = [(f"f{n:02}.yaml", ROUTE.format(i=n)) for n in range(40)]
    parent = os.getpid()
    parsed_here: list[str] = []

    def slow_here(text: str, name: str) -> parse_pool.Parsed:
        if os.getpid() == parent:
            parsed_here.append(name)
            time.sleep(0.02)
        return parse_documents(text, name)

    monkeypatch.setattr(parse_pool, "parse_documents", slow_here)
    got = parse_pool.parse_all(given)
    assert summary(got) == summary([parse_documents(t, n) for n, t in given])
    assert len(parsed_here) < 10, parsed_here  # the child, not slowed, took most
    assert all(name >= "f20" for name in parsed_here)  # from the back


def test_parsing_read_ahead_is_taken_over_by_the_next_parse(
        forking: list[int], tmp_path: Path) -> None:
    for name, text in texts():
        (tmp_path / name).write_text(text)
    parse_pool.read_ahead([tmp_path])
    assert len(forking) == 1  # started at once
    loaded = load_paths([tmp_path], parallel=True)
    assert len(forking) == 1  # the same child's work
    assert len([r for r in loaded.resources if r.kind == "Route"]) == 120
    assert not parse_pool._AHEAD


def test_parsing_read_ahead_of_texts_changed_since_is_not_used(
        forking: list[int], tmp_path: Path) -> None:
    for name, text in texts():
        (tmp_path / name).write_text(text)
    parse_pool.read_ahead([tmp_path])
    (tmp_path / "f0.yaml").write_text(ROUTE.format(i=5000))
    loaded = load_paths([tmp_path], parallel=True)
    assert len(forking) == 2
    assert "team/r5000" in {r.key for r in loaded.resources}
    with pytest.raises(ChildProcessError):  # the first child was stopped and reaped
        os.waitpid(forking[0], os.WNOHANG)


def test_closing_early_stops_the_children(forking: list[int]) -> None:
    given = texts()
    each = parse_pool.parse_each(given)
    first = next(each)
    assert summary([first]) == summary([parse_documents(given[0][1], given[0][0])])
    each.close()
    for pid in forking:  # killed and reaped
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_a_second_read_ahead_of_the_same_texts_keeps_the_first(
        forking: list[int], tmp_path: Path) -> None:
    """The command's entry point reads ahead (``cli/entry.py``), then the command itself
    asks again for the same files: the first children's work is kept."""
    for name, text in texts():
        (tmp_path / name).write_text(text)
    parse_pool.read_ahead([tmp_path])
    parse_pool.read_ahead([str(tmp_path)])
    assert len(forking) == 1
    loaded = load_paths([tmp_path], parallel=True)
    assert len(forking) == 1
    assert len([r for r in loaded.resources if r.kind == "Route"]) == 120
