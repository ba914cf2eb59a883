"""Deltas to proxies: a proxy that runs a recent version gets what changed since, not the IR.

A proxy that can apply deltas says so when it polls: ``delta=SCHEMA``, the IR schema its
deltas are in (its own), beside ``version``, the version it runs, and ``runs=1`` when it
reads runs of indices (``[first, end]`` for the held items ``first`` to ``end - 1``: a delta
then grows with the change, not with the configuration; proxies before it get single
indices). The answer is a delta
(``ir.delta.dumps_delta``: rules and statuses the proxy holds are written as their index in
its version) when all of these hold, else the full snapshot as before:

- the proxy reads this build's own schema, its deltas are in it, and the snapshot is in it
  (a downgraded form for an older proxy is always sent whole: ``ir_forms.py``);
- this replica still holds the version the proxy runs (the last ``KEPT`` versions of each
  Gateway; a proxy that restarted from its cache, or another replica's, gets the full one).

Invariants: a delta is encoded once per (Gateway, base, version) and its bytes are shared by
every proxy asking for it (``KEPT_DELTAS`` remembered); so are the full texts' bytes. The
version a delta names is the hash of the snapshot it rebuilds (the proxy checks it and
fetches the full snapshot when it differs), so a delta can never install anything the full
snapshot would not.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from propylon import ir
from propylon.ir import schema
from propylon.ir.delta import dumps_delta

DELTA_CONTENT_TYPE = "application/vnd.propylon.ir-delta+json"
BASE_HEADER = "x-propylon-delta-base"
KEPT = 8  # versions per Gateway a delta can start from
KEPT_DELTAS = 64
KEPT_TEXTS = 4


class SnapshotHistory:
    """The last versions of each Gateway, and the deltas and texts made from them."""

    def __init__(self, kept: int = KEPT) -> None:
        self.kept = kept
        self._versions: dict[str, OrderedDict[str, ir.SnapshotIR]] = {}
        self._deltas: OrderedDict[tuple[str, str, str, bool], bytes] = OrderedDict()
        self._texts: OrderedDict[int, tuple[str, bytes]] = OrderedDict()  # by id(text)

    def keep(self, gateway: str, snapshot: ir.SnapshotIR) -> None:
        versions = self._versions.setdefault(gateway, OrderedDict())
        versions[snapshot.version] = snapshot
        versions.move_to_end(snapshot.version)
        while len(versions) > self.kept:
            versions.popitem(last=False)

    def retain(self, gateways: Iterable[str]) -> None:
        """Forget the Gateways no longer configured."""
        keep = set(gateways)
        for gone in set(self._versions) - keep:
            del self._versions[gone]

    def previous(self, gateway: str, version: str) -> ir.SnapshotIR | None:
        versions = self._versions.get(gateway)
        return versions.get(version) if versions is not None else None

    def delta(self, gateway: str, base_version: str, snapshot: ir.SnapshotIR,
              runs: bool = False) -> bytes | None:
        """``snapshot`` as a delta against ``base_version`` of ``gateway`` (with ``runs`` of
        indices for a proxy that reads them); None when that version is not held."""
        key = (gateway, base_version, snapshot.version, runs)
        found = self._deltas.get(key)
        if found is not None:
            return found
        base = self.previous(gateway, base_version)
        if base is None:
            return None
        found = self._deltas[key] = dumps_delta(snapshot, base, runs).encode()
        while len(self._deltas) > KEPT_DELTAS:
            self._deltas.popitem(last=False)
        return found

    def text_bytes(self, text: str) -> bytes:
        """``text`` encoded, once per text for all the proxies it is sent to (a full IR at
        10,000 routes is megabytes)."""
        found = self._texts.get(id(text))
        if found is not None and found[0] is text:
            return found[1]
        body = text.encode()
        self._texts[id(text)] = (text, body)  # the text is kept, so its id is not reused
        while len(self._texts) > KEPT_TEXTS:
            self._texts.popitem(last=False)
        return body


def reads_deltas(delta_schema: str | None, reads: Iterable[int],
                 snapshot: ir.SnapshotIR) -> bool:
    """Whether a proxy polling with ``delta=delta_schema`` and ``schemas=reads`` can be sent
    ``snapshot`` as a delta: every form involved is this build's own."""
    native = schema.CURRENT.native
    if delta_schema != str(native) or snapshot.schema != native:
        return False
    try:
        return schema.CURRENT.target(reads) == native
    except schema.SchemaError:
        return False
