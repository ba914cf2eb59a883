"""The IR in the schema each proxy reads (version skew during a rollout, N-1 supported).

A proxy names the schemas it reads when it polls (``schemas=1,2``; none: schema 1). It gets
this build's text when it reads this build's schema, else the newest older form this build
writes (``ir.schema``), sealed with that form's hash; a proxy with no schema in common gets
406 with the reason. Downgraded texts are made once per version and schema. Versions of
downgraded forms are mapped back to the snapshot's own version wherever a proxy names one
(``after``, ``version``, reports), so the fleet shows one version per configuration.
"""

from __future__ import annotations

from collections.abc import Iterable

from propylon import ir
from propylon.ir import schema

_KEPT = 256  # downgraded texts remembered (oldest forgotten first)


class SchemaForms:
    def __init__(self) -> None:
        self._texts: dict[tuple[str, int], tuple[str, str]] = {}
        self._native: dict[str, str] = {}  # version of a downgraded form -> snapshot version

    def encode(self, snapshot: ir.SnapshotIR, text: str, reads: Iterable[int]) -> tuple[str, str]:
        """(text, version) for a proxy reading ``reads``; ``text`` is this build's form.
        Raises ``ir.schema.SchemaError`` when the proxy reads nothing this build writes or
        the configuration cannot be said in its schema."""
        schemas = schema.CURRENT
        target = schemas.target(reads)
        if target == schemas.native == snapshot.schema:
            return text, snapshot.version
        key = (snapshot.version, target)
        found = self._texts.get(key)
        if found is None:
            found = self._texts[key] = schemas.encode(snapshot, (target,))
            self._native[found[1]] = snapshot.version
            while len(self._texts) > _KEPT:
                _, forgotten = self._texts.pop(next(iter(self._texts)))
                self._native.pop(forgotten, None)
        return found

    def native_version(self, version: str) -> str:
        return self._native.get(version, version)


FORMS = SchemaForms()
