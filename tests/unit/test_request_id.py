"""Request ids: the UUID-shaped format, the counter across the 4,096-id steps, a new prefix
and counter after a fork."""

from __future__ import annotations

import os
import re

from propylon.observability import request_id
from propylon.observability.request_id import accepted_request_id, new_request_id

SHAPE = re.compile(rb"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def counter_of(value: bytes) -> int:
    return int(value[-12:], 16)


def test_ids_are_uuid_shaped_and_count_up_across_the_steps_of_their_last_digits() -> None:
    ids = request_id._IDS
    ids.count = 0
    new_request_id()  # the first of a step of 4,096 ids sets the upper digits
    ids.count = 4094  # two ids before they change, then two after
    made = [new_request_id() for _ in range(4)]
    assert all(SHAPE.match(value) for value in made), made
    assert [counter_of(value) for value in made] == [4094, 4095, 4096, 4097]
    assert len({value[:24] for value in made}) == 1  # one prefix
    ids.count = 0xFFFFFFFFF000  # the last step the 12 digits hold
    new_request_id()
    ids.count = 0xFFFFFFFFFFFE
    assert counter_of(new_request_id()) == 0xFFFFFFFFFFFE
    assert counter_of(new_request_id()) == 0xFFFFFFFFFFFF


def test_ids_in_a_row_are_distinct() -> None:
    made = {new_request_id() for _ in range(10_000)}
    assert len(made) == 10_000


def test_a_forked_child_draws_a_new_prefix_and_counts_from_zero() -> None:
    parent = new_request_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id, to the parent
        try:
            os.write(write, new_request_id())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 100)
    os.close(read)
    os.waitpid(pid, 0)
    assert SHAPE.match(child)
    assert child[:24] != parent[:24]
    assert counter_of(child) == 0


def test_a_trusted_id_is_kept_only_when_visible_ascii_and_not_too_long() -> None:
    assert accepted_request_id(b" abc-123 ") == b"abc-123"
    assert accepted_request_id(b"") is None
    assert accepted_request_id(b"a b") is None
    assert accepted_request_id(b"x" * 201) is None
    assert accepted_request_id("é".encode()) is None
