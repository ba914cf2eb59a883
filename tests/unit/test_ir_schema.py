"""IR schema versions: a build one schema ahead (tests/support/ir_schema_next.py) and this
one read each other's IR, N-1 at most, hashes checked over the form received; this build's
schema 4 (rules carry their own policies, the Gateway's apply where they have none) steps
down to 3 by listing the Gateway's policies in each rule again, and schema 3 (listener
sections) steps down to 2 only for an IR that does not use them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from propylon import ir
from propylon.config import load_paths
from propylon.controlplane.ir_forms import SchemaForms
from propylon.ir import schema
from propylon.ir.schema import LEGACY_READS, SchemaError, Schemas, Step, form_hash, parse_reads
from propylon.translate import translate_with_issues
from tests.support.ir_schema_next import NEXT, OLD
from tests.support.ir_schema_prev import PREV, PREV_2

CASES = Path(__file__).parents[1] / "golden" / "cases"


def snapshot(tracing: bool = False) -> ir.SnapshotIR:
    listener = ir.ListenerIR(name="web", port=8080, address="127.0.0.1")
    gateway = ir.GatewayIR(key="infra/edge", listeners=(listener,), rules=(), upstreams=(),
                           tracing=ir.TracingIR(otlp_endpoint="http://127.0.0.1:4318")
                           if tracing else None)
    return ir.seal(ir.SnapshotIR(gateways=(gateway,)))


def translated(case: str) -> ir.SnapshotIR:
    """The snapshot of a golden case (tests/golden/cases), as a control plane seals it."""
    loaded = load_paths([CASES / f"{case}.yaml"])
    assert not loaded.errors
    return ir.seal(translate_with_issues(loaded.resources, loaded.rejected).snapshot)


def test_a_build_reads_its_own_schema_and_the_one_before() -> None:
    assert ir.SnapshotIR(gateways=()).schema == 4
    assert OLD.supported() == (3, 4)
    assert PREV.supported() == (2, 3)  # the release before rules' own policies
    assert PREV_2.supported() == (1, 2)  # the release before listener sections
    assert NEXT.supported() == (4, 5)
    assert Schemas(native=6).supported() == (6,)  # no step from 5: N-1 is not claimed


def test_own_form_round_trips_with_the_codec_hash() -> None:
    snap = snapshot()
    text, version = OLD.encode(snap, {3, 4})
    assert (text, version) == (ir.dumps(snap), snap.version)
    assert OLD.decode(text) == snap


def test_schema_one_is_the_same_form_hashed_whole() -> None:
    """Schema 1 hashed the whole text; schema 2 hashes each rule and status list as its
    items' digests. The form is the same: the release of schema 2 sends a proxy of schema 1
    it with the older hash, and reads either."""
    snap = ir.seal(dataclasses.replace(snapshot(), statuses=(
        ir.StatusIR("Route", "a/x", "Accepted"), ir.StatusIR("Route", "a/y", "Invalid", ("x",)))))
    text, version = PREV_2.encode(snap, {1})
    data = json.loads(text)
    assert data["schema"] == 1 and version != snap.version
    whole = json.dumps({**data, "version": ""}, sort_keys=True, separators=(",", ":"))
    assert version == hashlib.sha256(whole.encode()).hexdigest()[:16]
    assert {**data, "schema": 4, "version": snap.version} == json.loads(ir.dumps(snap))
    lifted = PREV_2.decode(text)  # from a control plane of schema 1: its version is kept
    assert lifted.version == version
    assert dataclasses.replace(lifted, version=snap.version) == snap
    with pytest.raises(SchemaError, match="the proxy reads 1, this control plane writes 3, 4"):
        OLD.encode(snap, {1})  # three schemas behind this build
    with pytest.raises(SchemaError, match="IR schema 1 cannot be read by this proxy, which "
                       r"reads schema\(s\) 3, 4"):
        OLD.decode(text)


def test_schema_two_is_schema_three_without_sections_and_round_trips() -> None:
    """An IR that uses no listener sections goes 3 -> 2 -> 3 unchanged: the schema 2 text is
    the schema 3 text with ``schema`` 2 and its own hash, which both a proxy of schema 2
    and one of schema 3 check; lifted back, it seals to the version it came from."""
    snap = translated("design_example")
    assert snap.gateways and any(g.rules for g in snap.gateways)
    assert not any(r.sections for g in snap.gateways for r in g.rules)
    text, version = PREV.encode(snap, {1, 2})  # a proxy of the release before the last
    data = json.loads(text)
    assert data["schema"] == 2 and version == data["version"] == form_hash(data)
    three = json.loads(PREV.encode(snap, {3})[0])
    assert {**data, "schema": 3, "version": three["version"]} == three
    for reader in (PREV_2, PREV):  # the proxy it was made for, and the next release
        lifted = reader.decode(text)
        assert lifted.version == version  # the control plane's name for that form
        assert lifted.schema == 4 and dataclasses.replace(lifted, version=snap.version) == snap
        assert ir.seal(dataclasses.replace(lifted, version="")).version == snap.version
    again, again_version = PREV.encode(PREV.decode(text), {2})  # made again from the lifted
    assert (again, again_version) == (text, version)


def test_schema_three_rules_list_the_gateway_policies_and_round_trip() -> None:
    """Schema 4 rules carry their own policies only; a proxy of schema 3 gets each rule with
    its Gateway's default policies of the types it has none of (what it applies: the same
    filters as this build's proxies), and the form lifts back to this build's exactly."""
    snap = translated("policy_precedence")
    gateway = snap.gateways[0]
    assert gateway.default_policies and any(r.policies for r in gateway.rules)
    text, version = OLD.encode(snap, {2, 3})
    data = json.loads(text)
    assert data["schema"] == 3 and version == form_hash(data) != snap.version
    defaults = [p for p in json.loads(ir.dumps(snap))["gateways"][0]["default_policies"]]
    for rule, sent in zip(gateway.rules, data["gateways"][0]["rules"], strict=True):
        own = {p.type for p in rule.policies}
        assert {p["type"] for p in sent["policies"]} == own | {p["type"] for p in defaults}
        assert [p for p in sent["policies"] if p["type"] not in own] == [
            p for p in defaults if p["type"] not in own]
    for reader in (PREV, OLD):
        lifted = reader.decode(text)
        assert lifted.version == version
        assert dataclasses.replace(lifted, version=snap.version) == snap
    assert OLD.encode(OLD.decode(text), {3}) == (text, version)


def test_sections_are_refused_for_a_schema_two_proxy_not_dropped() -> None:
    """A proxy of schema 2 would ignore ``sections`` and serve a route attached to one
    listener on every listener of the Gateway: the step down refuses, naming the Gateway
    and what uses them; this build's proxies get its own form."""
    snap = translated("gateway_api_listeners")
    assert any(r.sections for g in snap.gateways for r in g.rules)
    text, version = PREV.encode(snap, {2, 3})
    assert json.loads(text)["schema"] == 3 and PREV.decode(text).version == version
    with pytest.raises(SchemaError) as refused:
        PREV.encode(snap, {1, 2})
    reason = str(refused.value)
    print(f"\nrefused for schema 2: {reason}")
    routes = list(dict.fromkeys(r.route for r in snap.gateways[0].rules if r.sections))
    assert reason.startswith(f"Gateway infra/edge serves {routes[0]}")
    assert "on some of its listeners only (Gateway API sectionName or port), which IR schema 2 " \
           "cannot express: a proxy reading schema 2 would serve every route on every " \
           "listener; upgrade the proxy to read schema 3" in reason
    # listener sections alone change what is served (a host no section fits: no rule)
    listener = dataclasses.replace(snapshot().gateways[0].listeners[0], sections=(
        ir.ListenerSectionIR("web", "foo.com"),))
    only = ir.seal(ir.SnapshotIR(gateways=(dataclasses.replace(
        snapshot().gateways[0], listeners=(listener,)),)))
    with pytest.raises(SchemaError, match=r"infra/edge has listener sections \(web\) \(Gateway"):
        PREV.encode(only, {2})


def test_newer_control_plane_serves_an_older_proxy_its_form() -> None:
    snap = snapshot()
    text, version = NEXT.encode(snap, {4})
    data = json.loads(text)
    assert data["schema"] == 4 and "address" in data["gateways"][0]["listeners"][0]
    decoded = OLD.decode(text)  # what this build's proxy does, hash included
    assert decoded.version == version
    assert ir.content_hash(decoded) == version  # the N-1 proxy's own check agrees


def test_newer_form_for_a_newer_proxy_and_an_older_form_lifted_by_it() -> None:
    snap = snapshot()
    text, version = NEXT.encode(snap, {4, 5})
    data = json.loads(text)
    assert data["schema"] == 5 and data["gateways"][0]["listeners"][0]["bind"] == "127.0.0.1"
    assert NEXT.decode(text).gateways == snap.gateways
    assert NEXT.decode(text).version == version
    older, older_version = OLD.encode(snap, {4, 5})  # an older control plane: schema 4
    lifted = NEXT.decode(older)
    assert lifted.gateways == snap.gateways and lifted.version == older_version


@pytest.mark.parametrize(("reader", "writer", "reads", "reason"), [
    pytest.param(OLD, NEXT, {5}, "IR schema 5 cannot be read by this proxy, which reads "
                 r"schema\(s\) 3, 4", id="newer-form-to-older-proxy"),
    pytest.param(PREV, OLD, {4}, "IR schema 4 cannot be read by this proxy, which reads "
                 r"schema\(s\) 2, 3", id="this-form-to-the-previous-release"),
], )
def test_a_proxy_refuses_a_schema_it_cannot_read(reader, writer, reads, reason) -> None:
    text, _ = writer.encode(snapshot(), reads)
    with pytest.raises(SchemaError, match=reason):
        reader.decode(text)


@pytest.mark.parametrize(("writer", "reads", "reason"), [
    pytest.param(OLD, {5}, "no IR schema in common: the proxy reads 5, this control plane "
                 "writes 3, 4", id="proxy-ahead-of-control-plane"),
    pytest.param(NEXT, {3}, "the proxy reads 3, this control plane writes 4, 5",
                 id="proxy-two-behind"),
    pytest.param(OLD, LEGACY_READS, "the proxy reads 1, this control plane writes 3, 4",
                 id="proxy-before-negotiation"),
])
def test_the_control_plane_refuses_a_proxy_with_no_schema_in_common(writer, reads,
                                                                     reason) -> None:
    with pytest.raises(SchemaError, match=reason):
        writer.encode(snapshot(), reads)


def _no_tracing(data: dict) -> dict:
    for gateway in data["gateways"]:
        if gateway.get("tracing") is not None:
            raise SchemaError(f"Gateway {gateway['key']} uses tracing, which IR schema 3 "
                              "cannot express")
    return data


# this build's schema 4 over a test-only schema 3 that had no tracing
WITHOUT_TRACING = Schemas(native=4, steps={4: Step(4, lambda data: data, _no_tracing)})


def test_a_configuration_the_older_schema_cannot_say_is_refused_not_dropped() -> None:
    assert WITHOUT_TRACING.supported() == (3, 4)
    with pytest.raises(SchemaError, match="uses tracing, which IR schema 3 cannot express"):
        WITHOUT_TRACING.encode(snapshot(tracing=True), {3})
    text, _ = WITHOUT_TRACING.encode(snapshot(), {3})
    assert json.loads(text)["schema"] == 3
    assert WITHOUT_TRACING.decode(text).gateways == snapshot().gateways


def test_a_changed_form_fails_its_hash() -> None:
    data = json.loads(NEXT.encode(snapshot(), {4})[0])
    data["gateways"][0]["listeners"][0]["port"] = 9090
    with pytest.raises(SchemaError, match="does not match its version"):
        OLD.decode(json.dumps(data))
    forged = dataclasses.replace(snapshot(), version="0" * 16)
    with pytest.raises(SchemaError, match="does not match"):
        OLD.check(forged)


@pytest.mark.parametrize(("value", "reads"), [
    pytest.param(None, LEGACY_READS, id="absent"),
    pytest.param("", LEGACY_READS, id="empty"),
    pytest.param("2,3", frozenset({2, 3}), id="two"),
])
def test_schemas_query(value, reads) -> None:
    assert parse_reads(value) == reads


def test_schemas_query_not_integers() -> None:
    with pytest.raises(SchemaError, match="comma-separated integers"):
        parse_reads("one")


def test_the_control_plane_makes_each_form_or_refusal_once_per_version(monkeypatch) -> None:
    """``SchemaForms`` (one per control plane): this build's text for its own proxies, the
    schema 3 form for older ones (made once, its version mapped back), and for a
    configuration schema 3 cannot say (tracing, in a test build whose schema 3 had none),
    the refusal, also made once (an older proxy polls again after each backoff)."""
    made: list[int] = []
    encode = Schemas.encode

    def counted(self, snapshot, reads):  # type: ignore[no-untyped-def]
        made.append(max(reads))
        return encode(self, snapshot, reads)
    monkeypatch.setattr(Schemas, "encode", counted)
    monkeypatch.setattr(schema, "CURRENT", WITHOUT_TRACING)
    forms = SchemaForms()
    plain, traced = translated("design_example"), snapshot(tracing=True)
    own = ir.dumps(traced)
    assert forms.encode(traced, own, {3, 4}) == (own, traced.version) and made == []
    for _ in range(2):
        with pytest.raises(SchemaError, match="uses tracing, which IR schema 3"):
            forms.encode(traced, own, {2, 3})
    assert made == [3]
    first = forms.encode(plain, ir.dumps(plain), {2, 3})
    assert forms.encode(plain, ir.dumps(plain), {3}) == first and made == [3, 3]
    assert json.loads(first[0])["schema"] == 3
    assert forms.native_version(first[1]) == plain.version
    with pytest.raises(SchemaError, match="the proxy reads 1, this control plane writes 3, 4"):
        forms.encode(plain, ir.dumps(plain), LEGACY_READS)
