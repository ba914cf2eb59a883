"""The IR in the schema each proxy reads (version skew during a rollout, N-1 supported).

A proxy names the schemas it reads when it polls (``schemas=2,3``; none: schema 1). It gets
this build's text when it reads this build's schema, else the newest older form this build
writes (``ir.schema``), sealed with that form's hash; a proxy with no schema in common gets
406 with the reason, and so does one whose schema cannot say the configuration (the step
down refuses it). Downgraded texts, and refusals, are made once per version and schema.
Versions of downgraded forms are mapped back to the snapshot's own version wherever a proxy
names one (``after``, ``version``, reports), so the fleet shows one version per
configuration.
"""

from __future__ import annotations

from collections.abc import Iterable

from propylon import ir
from propylon.ir import schema

_KEPT = 256  # downgraded texts remembered (oldest forgotten first)


class SchemaForms:
    def __init__(self) -> None:
        # (snapshot version, schema) -> (text, version) of that form, or why it was refused
        self._texts: dict[tuple[str, int], tuple[str, str] | schema.SchemaError] = {}
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
            try:
                found = schemas.encode(snapshot, (target,))
            except schema.SchemaError as exc:
                found = exc  # refused: every poll of that version and schema, without redoing it
            else:
                self._native[found[1]] = snapshot.version
            self._texts[key] = found
            while len(self._texts) > _KEPT:
                forgotten = self._texts.pop(next(iter(self._texts)))
                if not isinstance(forgotten, schema.SchemaError):
                    self._native.pop(forgotten[1], None)
        if isinstance(found, schema.SchemaError):
            raise schema.SchemaError(str(found))
        return found

    def native_version(self, version: str) -> str:
        return self._native.get(version, version)


FORMS = SchemaForms()
