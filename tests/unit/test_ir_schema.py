"""IR schema versions: a build one schema ahead (tests/support/ir_schema_next.py) and this
one read each other's IR, N-1 at most, hashes checked over the form received."""

from __future__ import annotations

import dataclasses
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
    assert OLD.supported() == (1,)
    assert NEXT.supported() == (1, 2)
    assert Schemas(native=3).supported() == (3,)  # no step from 2: N-1 is not claimed


def test_own_form_round_trips_with_the_codec_hash() -> None:
    snap = snapshot()
    text, version = OLD.encode(snap, {1})
    assert (text, version) == (ir.dumps(snap), snap.version)
    assert OLD.decode(text) == snap


def test_newer_control_plane_serves_an_older_proxy_its_form() -> None:
    snap = snapshot()
    text, version = NEXT.encode(snap, {1})
    data = json.loads(text)
    assert data["schema"] == 1 and "address" in data["gateways"][0]["listeners"][0]
    decoded = OLD.decode(text)  # what this build's proxy does, hash included
    assert decoded.version == version
    assert ir.content_hash(decoded) == version  # the N-1 proxy's own check agrees


def test_newer_form_for_a_newer_proxy_and_an_older_form_lifted_by_it() -> None:
    snap = snapshot()
    text, version = NEXT.encode(snap, {1, 2})
    data = json.loads(text)
    assert data["schema"] == 2 and data["gateways"][0]["listeners"][0]["bind"] == "127.0.0.1"
    assert NEXT.decode(text).gateways == snap.gateways
    assert NEXT.decode(text).version == version
    older, older_version = OLD.encode(snap, {1, 2})  # an older control plane: schema 1
    lifted = NEXT.decode(older)
    assert lifted.gateways == snap.gateways and lifted.version == older_version


@pytest.mark.parametrize(("reader", "writer", "reads", "reason"), [
    pytest.param(OLD, NEXT, {2}, "IR schema 2 cannot be read by this proxy, which reads "
                 r"schema\(s\) 1", id="newer-form-to-older-proxy"),
], )
def test_a_proxy_refuses_a_schema_it_cannot_read(reader, writer, reads, reason) -> None:
    text, _ = writer.encode(snapshot(), reads)
    with pytest.raises(SchemaError, match=reason):
        reader.decode(text)


@pytest.mark.parametrize(("writer", "reads", "reason"), [
    pytest.param(OLD, {2}, "no IR schema in common: the proxy reads 2, this control plane "
                 "writes 1", id="proxy-ahead-of-control-plane"),
    pytest.param(NEXT, {0}, "the proxy reads 0, this control plane writes 1, 2",
                 id="proxy-two-behind"),
])
def test_the_control_plane_refuses_a_proxy_with_no_schema_in_common(writer, reads,
                                                                     reason) -> None:
    with pytest.raises(SchemaError, match=reason):
        writer.encode(snapshot(), reads)


def _no_tracing(data: dict) -> dict:
    for gateway in data["gateways"]:
        if gateway.get("tracing") is not None:
            raise SchemaError(f"Gateway {gateway['key']} uses tracing, which IR schema 0 "
                              "cannot express")
    return data


# this build's schema 1 over a test-only schema 0 that had no tracing
WITH_ZERO = Schemas(native=1, steps={1: Step(1, lambda data: data, _no_tracing)})


def test_a_configuration_the_older_schema_cannot_say_is_refused_not_dropped() -> None:
    assert WITH_ZERO.supported() == (0, 1)
    with pytest.raises(SchemaError, match="uses tracing, which IR schema 0 cannot express"):
        WITH_ZERO.encode(snapshot(tracing=True), {0})
    text, _ = WITH_ZERO.encode(snapshot(), {0})
    assert json.loads(text)["schema"] == 0
    assert WITH_ZERO.decode(text).gateways == snapshot().gateways


def test_a_changed_form_fails_its_hash() -> None:
    data = json.loads(NEXT.encode(snapshot(), {1})[0])
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
