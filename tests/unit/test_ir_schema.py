"""IR schema versions: a build one schema ahead (tests/support/ir_schema_next.py) and this
one read each other's IR, N-1 at most, hashes checked over the form received."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from propylon import ir
from propylon.ir.schema import LEGACY_READS, SchemaError, Schemas, Step, parse_reads
from tests.support.ir_schema_next import NEXT, OLD


def snapshot(tracing: bool = False) -> ir.SnapshotIR:
    listener = ir.ListenerIR(name="web", port=8080, address="127.0.0.1")
    gateway = ir.GatewayIR(key="infra/edge", listeners=(listener,), rules=(), upstreams=(),
                           tracing=ir.TracingIR(otlp_endpoint="http://127.0.0.1:4318")
                           if tracing else None)
    return ir.seal(ir.SnapshotIR(gateways=(gateway,)))


def test_a_build_reads_its_own_schema_and_the_one_before() -> None:
    assert OLD.supported() == (1, 2)
    assert NEXT.supported() == (2, 3)
    assert Schemas(native=4).supported() == (4,)  # no step from 3: N-1 is not claimed


def test_own_form_round_trips_with_the_codec_hash() -> None:
    snap = snapshot()
    text, version = OLD.encode(snap, {1, 2})
    assert (text, version) == (ir.dumps(snap), snap.version)
    assert OLD.decode(text) == snap


def test_schema_one_is_the_same_form_hashed_whole() -> None:
    """Schema 1 (before this build) hashed the whole text; schema 2 hashes each rule and
    status list as its items' digests. The form is the same: a proxy of schema 1 is sent it
    with the older hash, and this build reads either."""
    snap = ir.seal(dataclasses.replace(snapshot(), statuses=(
        ir.StatusIR("Route", "a/x", "Accepted"), ir.StatusIR("Route", "a/y", "Invalid", ("x",)))))
    text, version = OLD.encode(snap, {1})
    data = json.loads(text)
    assert data["schema"] == 1 and version != snap.version
    whole = json.dumps({**data, "version": ""}, sort_keys=True, separators=(",", ":"))
    assert version == hashlib.sha256(whole.encode()).hexdigest()[:16]
    assert {**data, "schema": 2, "version": snap.version} == json.loads(ir.dumps(snap))
    lifted = OLD.decode(text)  # from a control plane of schema 1: its version is kept
    assert lifted.version == version
    assert dataclasses.replace(lifted, version=snap.version) == snap


def test_newer_control_plane_serves_an_older_proxy_its_form() -> None:
    snap = snapshot()
    text, version = NEXT.encode(snap, {2})
    data = json.loads(text)
    assert data["schema"] == 2 and "address" in data["gateways"][0]["listeners"][0]
    decoded = OLD.decode(text)  # what this build's proxy does, hash included
    assert decoded.version == version
    assert ir.content_hash(decoded) == version  # the N-1 proxy's own check agrees


def test_newer_form_for_a_newer_proxy_and_an_older_form_lifted_by_it() -> None:
    snap = snapshot()
    text, version = NEXT.encode(snap, {2, 3})
    data = json.loads(text)
    assert data["schema"] == 3 and data["gateways"][0]["listeners"][0]["bind"] == "127.0.0.1"
    assert NEXT.decode(text).gateways == snap.gateways
    assert NEXT.decode(text).version == version
    older, older_version = OLD.encode(snap, {2, 3})  # an older control plane: schema 2
    lifted = NEXT.decode(older)
    assert lifted.gateways == snap.gateways and lifted.version == older_version


@pytest.mark.parametrize(("reader", "writer", "reads", "reason"), [
    pytest.param(OLD, NEXT, {3}, "IR schema 3 cannot be read by this proxy, which reads "
                 r"schema\(s\) 1, 2", id="newer-form-to-older-proxy"),
], )
def test_a_proxy_refuses_a_schema_it_cannot_read(reader, writer, reads, reason) -> None:
    text, _ = writer.encode(snapshot(), reads)
    with pytest.raises(SchemaError, match=reason):
        reader.decode(text)


@pytest.mark.parametrize(("writer", "reads", "reason"), [
    pytest.param(OLD, {3}, "no IR schema in common: the proxy reads 3, this control plane "
                 "writes 1, 2", id="proxy-ahead-of-control-plane"),
    pytest.param(NEXT, {1}, "the proxy reads 1, this control plane writes 2, 3",
                 id="proxy-two-behind"),
])
def test_the_control_plane_refuses_a_proxy_with_no_schema_in_common(writer, reads,
                                                                     reason) -> None:
    with pytest.raises(SchemaError, match=reason):
        writer.encode(snapshot(), reads)


def _no_tracing(data: dict) -> dict:
    for gateway in data["gateways"]:
        if gateway.get("tracing") is not None:
            raise SchemaError(f"Gateway {gateway['key']} uses tracing, which IR schema 1 "
                              "cannot express")
    return data


# this build's schema 2 over a test-only schema 1 that had no tracing
WITHOUT_TRACING = Schemas(native=2, steps={2: Step(2, lambda data: data, _no_tracing)})


def test_a_configuration_the_older_schema_cannot_say_is_refused_not_dropped() -> None:
    assert WITHOUT_TRACING.supported() == (1, 2)
    with pytest.raises(SchemaError, match="uses tracing, which IR schema 1 cannot express"):
        WITHOUT_TRACING.encode(snapshot(tracing=True), {1})
    text, _ = WITHOUT_TRACING.encode(snapshot(), {1})
    assert json.loads(text)["schema"] == 1
    assert WITHOUT_TRACING.decode(text).gateways == snapshot().gateways


def test_a_changed_form_fails_its_hash() -> None:
    data = json.loads(NEXT.encode(snapshot(), {2})[0])
    data["gateways"][0]["listeners"][0]["port"] = 9090
    with pytest.raises(SchemaError, match="does not match its version"):
        OLD.decode(json.dumps(data))
    forged = dataclasses.replace(snapshot(), version="0" * 16)
    with pytest.raises(SchemaError, match="does not match"):
        OLD.check(forged)


@pytest.mark.parametrize(("value", "reads"), [
    pytest.param(None, LEGACY_READS, id="absent"),
    pytest.param("", LEGACY_READS, id="empty"),
    pytest.param("1,2", frozenset({1, 2}), id="two"),
])
def test_schemas_query(value, reads) -> None:
    assert parse_reads(value) == reads


def test_schemas_query_not_integers() -> None:
    with pytest.raises(SchemaError, match="comma-separated integers"):
        parse_reads("one")
