"""The admin listener's ``/config``: the IR served, secrets redacted, as compact JSON.

Written a rule and a status at a time, each redacted and encoded on its own and the pieces
joined: the whole snapshot as one tree of plain data held 10,000 Routes' worth of
dictionaries at once, which the supervisor's heap kept after the answer. The text is the one
``json_sorted(redact(to_data(snapshot)))`` gives."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from propylon.admin.redact import redact
from propylon.ir import SnapshotIR, to_data
from propylon.ir.jsontext import json_list, json_sorted
from propylon.runtime.gc_pause import gc_paused

# what stands for a list written separately, found again in the encoded text
_HOLE = "\x00propylon-config-hole\x00"
_HOLE_TEXT = json_sorted(_HOLE)


def config_document(snapshot: SnapshotIR | None) -> bytes:
    if snapshot is None:
        return b"null\n"
    with gc_paused():
        text = _written_in_pieces(snapshot)
        if text is None:  # a value of the configuration is the hole's text: written whole
            text = json_sorted(redact(to_data(snapshot)))
        return text.encode() + b"\n"


def _written_in_pieces(snapshot: SnapshotIR) -> str | None:
    top = redact(to_data(dataclasses.replace(snapshot, gateways=(), statuses=())))
    top["gateways"] = top["statuses"] = _HOLE  # keys sorted: gateways, then statuses
    around = _around_holes(json_sorted(top), 2)
    if around is None:
        return None
    head, middle, tail = around
    pieces = [head, "["]
    for index, gateway in enumerate(snapshot.gateways):
        form = redact(to_data(dataclasses.replace(gateway, rules=())))
        form["rules"] = _HOLE
        inside = _around_holes(json_sorted(form), 1)
        if inside is None:
            return None
        pieces += ("," if index else "", inside[0], _list(gateway.rules), inside[1])
    pieces += ("]", middle, _list(snapshot.statuses), tail)
    return "".join(pieces)


def _list(items: Sequence[Any]) -> str:
    return json_list(items, lambda item: json_sorted(redact(to_data(item))))


def _around_holes(text: str, holes: int) -> list[str] | None:
    """The pieces of ``text`` around its ``holes`` holes, or None if it has another count
    (a value of the data that is the hole's text)."""
    pieces = text.split(_HOLE_TEXT)
    return pieces if len(pieces) == holes + 1 else None
