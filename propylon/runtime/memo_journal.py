"""What a compilation changed in a dictionary of the last one's memo, undone unless committed.

A compilation that keeps most of a Gateway's rules by position takes that Gateway's dictionary
of the last compilation over instead of copying it (one Route changed among 10,000 copied
40,000 entries, and freed as many at the commit, for every change on every worker), and notes
here each entry it sets or removes in it. The memos keep only what the last *successful*
compilation made: one that fails is undone (the memos' ``abort``, which ``compile_snapshot``
calls; their ``begin`` too, for a compilation neither committed nor aborted).
"""

from __future__ import annotations

from typing import Any

_MISSING: Any = object()


class Journal:
    __slots__ = ("_notes",)

    def __init__(self) -> None:
        self._notes: list[tuple[dict[Any, Any], Any, Any]] = []

    def set(self, entries: dict[Any, Any], key: Any, value: Any) -> None:
        self._notes.append((entries, key, entries.get(key, _MISSING)))
        entries[key] = value

    def put(self, entries: dict[Any, Any], key: Any, value: Any, last: dict[Any, Any]) -> None:
        """``entries[key] = value``, noted if ``entries`` is ``last``: the last compilation's
        dictionary, taken over (otherwise it is this compilation's own, dropped whole if it
        fails)."""
        if entries is last:
            self.set(entries, key, value)
        else:
            entries[key] = value

    def pop(self, entries: dict[Any, Any], key: Any) -> Any:
        """The entry removed, or None if there was none."""
        value = entries.pop(key, _MISSING)
        if value is _MISSING:
            return None
        self._notes.append((entries, key, value))
        return value

    def undo(self) -> None:
        """Put back, newest first, what was set or removed since the last ``forget``."""
        for entries, key, old in reversed(self._notes):
            if old is _MISSING:
                entries.pop(key, None)
            else:
                entries[key] = old
        self._notes.clear()

    def forget(self) -> None:
        """The compilation was committed: its changes stay."""
        self._notes.clear()
