"""A call made in a forked child (``runtime/forked.py``) gives what the call gives here: its
value, computed in another process, or, when no child could give one (no fork, a failure, an
exception), the call made here, raising as it raises here."""

from __future__ import annotations

import os
import threading

import pytest

from propylon.runtime import forked
from propylon.runtime.forked import ForkedCall


def whose() -> tuple[int, list[int]]:
    return os.getpid(), [n * n for n in range(1000)]


def test_the_call_is_made_in_a_child_and_its_value_comes_back() -> None:
    call = ForkedCall(whose)
    assert call.forked
    pid, squares = call.result()
    assert pid != os.getpid()
    assert squares == [n * n for n in range(1000)]


def test_a_large_value_comes_back_whole() -> None:
    big = "x" * (3 << 20)  # larger than a pipe holds: the parent reads while the child writes
    assert ForkedCall(lambda: big).result() == big


def test_none_is_a_value() -> None:
    made = []

    def nothing() -> None:
        made.append(os.getpid())

    assert ForkedCall(nothing).result() is None
    assert made == []  # made in the child only


def test_a_child_that_fails_leaves_the_call_to_this_process() -> None:
    def dies() -> int:
        if os.getpid() != parent:
            os._exit(3)
        return 7

    parent = os.getpid()
    call = ForkedCall(dies)
    assert call.forked
    assert call.result() == 7


def test_an_exception_in_the_child_is_raised_here() -> None:
    def fails() -> int:
        raise ValueError(f"no from {os.getpid()}")

    with pytest.raises(ValueError, match=f"no from {os.getpid()}$"):
        ForkedCall(fails).result()


def test_no_fork_with_another_thread_running() -> None:
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        call = ForkedCall(whose)
        assert not call.forked
        assert call.result()[0] == os.getpid()
    finally:
        stop.set()
        other.join()


def test_a_refused_fork_makes_the_call_here(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused() -> int:
        raise OSError("no more processes")

    monkeypatch.setattr(forked.os, "fork", refused)
    call = ForkedCall(whose)
    assert not call.forked
    assert call.result()[0] == os.getpid()
