"""IR schema versions: which JSON forms of the IR a build reads and writes.

Invariants:
- Every IR text carries ``schema``, the version of its JSON form, and ``version``, the hash
  of that form (``codec.content_hash`` when it is this build's own form). A reader checks the
  hash over the form it received, then lifts it to its own form.
- A build's own schema is ``native``; ``steps[n]`` converts between schema ``n - 1`` and ``n``
  both ways. ``upgrade`` never fails. ``downgrade`` raises ``SchemaError`` when the IR uses
  something schema ``n - 1`` cannot say: it refuses rather than drop it, since a proxy that
  ignored a field it does not know would serve a different configuration.
- Policy (N-1): a build reads and writes its own schema and, when a step to it exists, the
  previous one. So a control plane serves proxies one schema behind it (a downgraded form,
  sealed with that form's hash), and a proxy reads a control plane one schema behind it.
  Proxies name the schemas they read when they poll (``schemas=2,3``); a poll without it comes
  from a build before schemas were negotiated, which reads schema 1 only.
- Adding a field that is left out of the JSON form while it holds its default
  (``codec._OMIT_DEFAULT``) needs no new schema only when a reader that ignores it serves the
  same thing; otherwise bump ``model.IR_SCHEMA_VERSION`` and add a step here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from propylon.ir import codec, model
from propylon.ir.jsontext import json_sorted

Data = dict[str, Any]
LEGACY_READS = frozenset({1})  # what a proxy that sends no ``schemas`` reads


class SchemaError(ValueError):
    """An IR text this build cannot read, or an IR it cannot write for a reader."""


@dataclass(frozen=True)
class Step:
    """Conversions between schema ``to - 1`` and schema ``to`` of the JSON form."""

    to: int
    upgrade: Callable[[Data], Data]
    downgrade: Callable[[Data], Data]  # raises SchemaError when the older form cannot say it
    summary: str = ""


def form_hash(data: Mapping[str, Any]) -> str:
    """The hash of a JSON form, as ``codec.content_hash`` computes it for this build's.
    Schema 1 hashes the whole text; from schema 2 on, each hashed list (the statuses, each
    Gateway's rules) is written as the digest of its items' texts (``codec.list_digest``)."""
    unsealed: dict[str, Any] = {**data, "version": ""}
    if unsealed.get("schema", 1) >= 2:
        unsealed["statuses"] = _list_digest(unsealed.get("statuses", []))
        unsealed["gateways"] = [
            {**gateway, "rules": _list_digest(gateway.get("rules", []))}
            if isinstance(gateway, dict) else gateway
            for gateway in unsealed.get("gateways", [])]
    return hashlib.sha256(json_sorted(unsealed).encode()).hexdigest()[:16]


def _list_digest(items: Any) -> Any:
    if not isinstance(items, list):
        return items  # not a form this build wrote: the hash will not match
    return codec.list_digest(b"".join(codec.item_digest(json_sorted(item)) for item in items))





def _same_form(data: Data) -> Data:
    return data


# Schema 2: the same JSON form, the version hashed over each list's item digests instead of
# the whole text (``form_hash``): sealing a change hashes what changed, not what follows it.
HASH_OF_DIGESTS = Step(2, _same_form, _same_form,
                       "version: each rule and status list hashed as its items' digests")


def _without_sections(data: Data) -> Data:
    """Schema 3 down to 2: refused when a Gateway uses listener sections."""
    for gateway in data.get("gateways", []):
        routes = list(dict.fromkeys(str(rule.get("route")) for rule in gateway.get("rules", [])
                                    if rule.get("sections")))
        listeners = [str(listener.get("name")) for listener in gateway.get("listeners", [])
                     if listener.get("sections")]
        if routes or listeners:
            what = (f"serves {_some(routes)} on some of its listeners only"
                    if routes else f"has listener sections ({_some(listeners)})")
            raise SchemaError(
                f"Gateway {gateway.get('key')} {what} (Gateway API sectionName or port), "
                f"which IR schema 2 cannot express: a proxy reading schema 2 would serve "
                f"every route on every listener; upgrade the proxy to read schema 3")
    return data


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


# Schema 3: listener sections (``ListenerIR.sections``, ``RuleIR.sections``): a route attached
# by ``sectionName`` or ``port`` is served on that listener only. Both are left out of the JSON
# while empty, so a schema 2 form is a schema 3 form without them (the upgrade changes
# nothing); a proxy of schema 2 would ignore them and serve such routes on every listener of
# the Gateway, so the downgrade refuses an IR that uses them.
LISTENER_SECTIONS = Step(3, _same_form, _without_sections,
                         "listener sections: routes served on some listeners only")


def _rules_with_defaults(data: Data) -> Data:
    """Schema 4 down to 3: each rule lists its Gateway's default policies of the types it has
    none of, as schema 3 rules do (appended: a reader orders a rule's filters by its own
    policy type table)."""
    return _each_rule(data, _with_defaults)


def _rules_without_defaults(data: Data) -> Data:
    """Schema 3 up to 4: each rule's copies of its Gateway's default policies left out (a
    rule's own policies are never equal to one: their sources name the Route, RouteTable or
    rule, a default's the Gateway)."""
    return _each_rule(data, _without_defaults)


def _each_rule(data: Data, change: Callable[[Any, list[Any]], Any]) -> Data:
    """``data`` with ``change(rule, default policies)`` of each rule of a Gateway that has
    default policies."""
    gateways = []
    for gateway in data.get("gateways", []):
        defaults = gateway.get("default_policies") or [] if isinstance(gateway, dict) else []
        if defaults:
            gateway = {**gateway, "rules": [change(rule, defaults)
                                            for rule in gateway.get("rules", [])]}
        gateways.append(gateway)
    return {**data, "gateways": gateways}


def _without_defaults(rule: Any, defaults: list[Any]) -> Any:
    if not isinstance(rule, dict) or not rule.get("policies"):
        return rule
    return {**rule, "policies": [policy for policy in rule["policies"] if policy not in defaults]}


def _with_defaults(rule: Any, defaults: list[Any]) -> Any:
    if not isinstance(rule, dict):
        return rule
    own = rule.get("policies") or []
    types = {policy.get("type") for policy in own if isinstance(policy, dict)}
    return {**rule, "policies": [*own, *(policy for policy in defaults
                                          if policy.get("type") not in types)]}


# Schema 4: a rule's ``policies`` are its own; its Gateway's ``default_policies`` apply to it
# for the types it has none of (``model.effective_policies``), so a change of a Gateway's
# policies changes no rule. Schema 3 rules list the Gateway-level winners themselves: the
# upgrade leaves those copies out, the downgrade lists them in every rule again.
GATEWAY_DEFAULTS = Step(4, _rules_without_defaults, _rules_with_defaults,
                        "rules carry their own policies; the Gateway's apply where they have none")


# on a control plane's full IR answer: the schema of its form (a proxy may hand a text in its
# own schema to its workers before decoding it)
SCHEMA_HEADER = "x-propylon-schema"


@dataclass(frozen=True)
class Schemas:
    """What one build reads and writes: its own schema and the steps down from it."""

    native: int = model.IR_SCHEMA_VERSION
    steps: Mapping[int, Step] = field(default_factory=dict)

    def supported(self) -> tuple[int, ...]:
        """Schemas read and written: the own one, and N-1 when a step leads from it."""
        older = (self.native - 1,) if self.native in self.steps else ()
        return (*older, self.native)

    # -- reading (proxies) ---------------------------------------------------------------
    def decode(self, text: str | bytes) -> model.SnapshotIR:
        """The snapshot of an IR text in any supported schema, hash checked over the form
        received; ``version`` stays the one received (the control plane's name for it)."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise SchemaError("an IR is a JSON object")
        schema = data.get("schema", 1)
        if schema not in self.supported():
            raise SchemaError(
                f"IR schema {schema} cannot be read by this proxy, which reads schema(s) "
                f"{_names(self.supported())}; upgrade the proxy, or keep the control plane "
                f"at most one schema ahead")
        version = data.get("version")
        if schema == self.native == model.IR_SCHEMA_VERSION:
            # this build's own form: decoded, then hashed as sealing does (``codec`` keeps
            # the texts and digests, so the next delta's seal hashes only what it changes)
            snapshot = codec.from_data(model.SnapshotIR, data)
            if codec.content_hash(snapshot) != version:
                raise SchemaError("IR content does not match its version")
            return snapshot
        if form_hash(data) != version:
            raise SchemaError("IR content does not match its version")
        data = self._convert(data, schema, model.IR_SCHEMA_VERSION)
        return codec.from_data(model.SnapshotIR, {**data, "version": version})

    def check(self, snapshot: model.SnapshotIR) -> None:
        """What ``decode`` checks of a snapshot in this build's form (the hash)."""
        if codec.content_hash(snapshot) != snapshot.version:
            raise SchemaError("IR content does not match its version")

    # -- writing (control plane) ---------------------------------------------------------
    def target(self, reads: Iterable[int]) -> int:
        """The newest schema both this build writes and the reader reads."""
        common = set(self.supported()) & set(reads)
        if not common:
            raise SchemaError(
                f"no IR schema in common: the proxy reads {_names(reads)}, this control "
                f"plane writes {_names(self.supported())}; upgrade the proxy (N-1 is "
                f"supported) or roll the control plane back")
        return max(common)

    def encode(self, snapshot: model.SnapshotIR, reads: Iterable[int]) -> tuple[str, str]:
        """(text, version) of ``snapshot`` for a reader of ``reads``: this build's own form
        (``codec.dumps``) when it reads it, else the older form sealed with its own hash."""
        schema = self.target(reads)
        if schema == self.native == snapshot.schema:
            return codec.dumps(snapshot), snapshot.version
        data = self._convert(codec.to_data(snapshot), snapshot.schema, schema)
        data["version"] = form_hash(data)
        return json_sorted(data), data["version"]

    def _convert(self, data: Data, start: int, end: int) -> Data:
        """The form ``data`` (of schema ``start``) takes in schema ``end``, step by step.
        In a release the model's form (``codec``) is the build's own schema; a test build
        claims a newer or an older one over the same model."""
        for step in range(start + 1, end + 1):
            data = {**self.steps[step].upgrade(data), "schema": step}
        for step in range(start, end, -1):
            data = {**self.steps[step].downgrade(data), "schema": step - 1}
        return data


def parse_reads(value: str | None) -> frozenset[int]:
    """The ``schemas`` a proxy sent (``"1,2"``); absent: ``LEGACY_READS``."""
    if value is None or value == "":
        return LEGACY_READS
    try:
        return frozenset(int(part) for part in value.split(","))
    except ValueError:
        raise SchemaError(f"schemas must be comma-separated integers, got {value!r}") from None


def _names(schemas: Iterable[int]) -> str:
    return ", ".join(str(s) for s in sorted(schemas))


# this build's; tests build others
CURRENT = Schemas(steps={2: HASH_OF_DIGESTS, 3: LISTENER_SECTIONS, 4: GATEWAY_DEFAULTS})
