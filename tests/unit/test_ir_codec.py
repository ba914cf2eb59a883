import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from propylon import ir
from propylon.config import load_paths
from propylon.ir import model
from propylon.ir.codec import text_of
from propylon.translate import translate


def _snapshot() -> ir.SnapshotIR:
    rule = ir.RuleIR(
        id="route:a/x:0", route="Route a/x", name=None, hostnames=("*.x.com",),
        matches=(ir.MatchIR(ir.PathMatchIR("exact", "/x"), "GET",
                            (ir.ValueMatchIR("h", regex="a.*"),)),),
        action=ir.ForwardIR((ir.BackendIR("a/u", 3),), ir.RewriteIR(prefix="/")),
        policies=(ir.PolicyIR("headers", {"request": {"set": {"a": "b"}}}, "Gateway a/b"),),
    )
    redirect = ir.RuleIR("route:a/x:1", "Route a/x", "r", (), (ir.MatchIR(),),
                         ir.RedirectIR(301, path="/y"))
    gateway = ir.GatewayIR(
        "a/b", (ir.ListenerIR("web", 8080),), (rule, redirect),
        (ir.UpstreamIR("a/u", (ir.EndpointIR("127.0.0.1", 80),),
                       hash_on=ir.HashOnIR("header", "x")),),
    )
    return ir.SnapshotIR(gateways=(gateway,), statuses=(ir.StatusIR("Route", "a/x", "Accepted"),))


def test_round_trip_preserves_everything() -> None:
    sealed = ir.seal(_snapshot())
    assert ir.loads(ir.dumps(sealed)) == sealed


def test_version_is_a_content_hash() -> None:
    one, two = ir.seal(_snapshot()), ir.seal(_snapshot())
    assert one.version == two.version and len(one.version) == 16
    changed = ir.seal(ir.SnapshotIR(gateways=(), statuses=()))
    assert changed.version != one.version
    assert ir.content_hash(one) == one.version  # the version itself is not hashed


def _whole(snapshot: object) -> str:
    return json.dumps(ir.to_data(snapshot), sort_keys=True, separators=(",", ":"))


def _reference_version(unsealed: ir.SnapshotIR) -> str:
    """The version as IR schema 2 defines it, from the JSON form alone: the SHA-256 of the
    text in which the statuses and each Gateway's rules are written as
    ``sha256:<SHA-256 of the first 16 bytes of each item's SHA-256, in order>``."""
    def digest(items: list[object]) -> str:
        joined = b"".join(hashlib.sha256(_whole(item).encode()).digest()[:16] for item in items)
        return "sha256:" + hashlib.sha256(joined).hexdigest()

    data = ir.to_data(unsealed)
    data["statuses"] = digest(data["statuses"])
    data["gateways"] = [{**g, "rules": digest(g["rules"])} for g in data["gateways"]]
    return hashlib.sha256(_whole(data).encode()).hexdigest()[:16]


@pytest.mark.parametrize("snapshot", [
    pytest.param(_snapshot(), id="one-gateway"),
    pytest.param(ir.SnapshotIR(gateways=(), statuses=()), id="empty"),
    pytest.param(dataclasses.replace(_snapshot(), gateways=(
        _snapshot().gateways[0], dataclasses.replace(_snapshot().gateways[0], key="a/c",
                                                     rules=()))), id="two-gateways"),
    pytest.param(dataclasses.replace(_snapshot(), statuses=(
        ir.StatusIR("Route", "a/x", "Accepted", ("\x00propylon-statuses\x00 é",)),)),
                 id="placeholder-in-a-status"),
])
def test_spliced_texts_are_the_whole_encoding(snapshot: ir.SnapshotIR) -> None:
    """Sealing and encoding join the kept texts and digests of rules and statuses with the
    rest: the same text, and the same version, as encoding the snapshot whole, first and
    again."""
    for _ in range(2):  # the second time, every rule's and status's text is the kept one
        sealed = ir.seal(snapshot)
        unsealed = dataclasses.replace(sealed, version="")
        assert sealed.version == _reference_version(unsealed)
        assert ir.dumps(sealed) == _whole(sealed)
        assert ir.dumps(sealed) == _whole(sealed)  # encoded again


GOLDEN = sorted((Path(__file__).parents[1] / "golden" / "cases").glob("*.yaml"))


@pytest.mark.parametrize("case", GOLDEN, ids=[case.stem for case in GOLDEN])
def test_text_of_a_golden_snapshot_is_its_json(case: Path) -> None:
    loaded = load_paths([case])
    snapshot = translate(loaded.resources)
    assert text_of(snapshot) == _whole(snapshot)
    for gateway in snapshot.gateways:
        for rule in gateway.rules:
            assert text_of(rule) == _whole(rule)


@pytest.mark.parametrize("value", [
    pytest.param({"b": 1, "a": [1.5, True, None, "é\\n\x00"], "c": {"z": {}, "y": []}},
                 id="nested-json"),
    pytest.param({1: "int key", "1": "same text"}, id="keys-not-strings"),
    pytest.param({"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"),
                  "big": 10**30, "small": 1e-300, "neg": -0.0}, id="numbers"),
    pytest.param((), id="empty-tuple"),
    pytest.param("\u2028 \ud83d\ude00 \"quoted\"", id="string"),
])
def test_text_of_data_is_its_json(value: object) -> None:
    policy = ir.PolicyIR("headers", value, "Route a/b")  # type: ignore[arg-type]
    assert text_of(policy) == _whole(policy)
    assert text_of(value) == _whole(value)


def test_decoding_fills_defaults_and_refuses_what_is_missing() -> None:
    """Fields left out of the JSON take their defaults (a factory's new value each time);
    a required field left out is refused as the keyword call refuses it."""
    upstream = ir.from_data(ir.UpstreamIR, {"key": "a/u", "endpoints": [
        {"address": "127.0.0.1", "port": 80}]})
    assert upstream == ir.UpstreamIR("a/u", (ir.EndpointIR("127.0.0.1", 80),))
    assert ir.from_data(ir.EndpointIR, {"address": "x", "port": 1, "weight": 5}).weight == 5
    match = ir.from_data(ir.MatchIR, {})
    assert match.path == ir.PathMatchIR("prefix", "/")
    assert match.path is not ir.from_data(ir.MatchIR, {}).path
    with pytest.raises(TypeError, match="port"):
        ir.from_data(ir.EndpointIR, {"address": "x"})


class _Text(str):
    pass


class _Count(int):
    pass


@pytest.mark.parametrize("value", [
    pytest.param(ir.ForwardIR([ir.BackendIR("a/u", True)], timeout=5,  # type: ignore[arg-type]
                              unresolved_weight=2), id="list-bool-int-for-declared-types"),
    pytest.param(ir.ForwardIR((ir.BackendIR(_Text("a/u"), _Count(2)),), timeout=float("inf")),
                 id="subclasses-and-infinity"),
    pytest.param(ir.RuleIR("r", "Route a/x", _Text("n"), ("*.a", _Text("b")),
                           (ir.MatchIR(method=None), {"path": "not a match"}),  # type: ignore[arg-type]
                           ir.DirectResponseIR(200, "é\x00"),
                           (ir.PolicyIR("headers", {"b": (1, 2.5), "a": {"z": None}}, "s"),
                            ir.PolicyIR("cors", {1: "x", "1": "y"}, "s"),  # type: ignore[dict-item]
                            ir.PolicyIR("cors", {"k": _Text("v"), "n": float("nan")}, "s"))),
                 id="rule-with-odd-fields"),
    pytest.param(ir.RuleIR("r", "Route a/x", None, (), (), None, None,  # type: ignore[arg-type]
                           [], 1),  # type: ignore[arg-type]
                 id="rule-with-none-and-lists"),
    pytest.param(ir.SnapshotIR(gateways=(), consumers=(model.ConsumerIR("a/c", "c", {"k": "v"}),)),
                 id="first-key-left-out-when-default-here-kept"),
    pytest.param(ir.SnapshotIR(gateways=()), id="first-key-left-out"),
    pytest.param(ir.RedirectIR(301, prefix="/p"), id="redirect-prefix"),
])
def test_text_of_values_not_as_declared_is_their_json(value: object) -> None:
    """Each writer writes a field by the type its hint declares, and any other value as
    ``to_data`` and ``json`` do: the same text either way."""
    assert text_of(value) == _whole(value)


def test_shared_sections_are_written_once_and_each_object_as_itself() -> None:
    """A forward and a spec shared by many rules are written once (their texts kept by
    identity); objects equal to them, or met after the memo was emptied, are written as
    themselves."""
    shared = ir.ForwardIR((ir.BackendIR("a/u", 1),), timeout=5.0)
    spec = {"response": {"set": {"x-a": "yes"}}}

    def rule(index: int, action: ir.ForwardIR, policy_spec: dict[str, object]) -> ir.RuleIR:
        return ir.RuleIR(f"route:a/r{index}:0", f"Route a/r{index}", None, (),
                         (ir.MatchIR(ir.PathMatchIR("prefix", f"/r{index}")),), action,
                         (ir.PolicyIR("headers", policy_spec, f"Route a/r{index}"),))

    rules = [rule(i, shared, spec) for i in range(3)]
    # more distinct ones than a memo keeps: each is still its own text
    rules += [rule(i, ir.ForwardIR((ir.BackendIR(f"a/u{i}", 1),), timeout=float(i)),
                   {"response": {"set": {"x-a": str(i)}}}) for i in range(3, 5000)]
    rules += [rule(5000, ir.ForwardIR((ir.BackendIR("a/u", 1),), timeout=5.0), dict(spec))]
    rules += [rule(5001, shared, spec)]
    for item in rules:
        assert text_of(item) == _whole(item)
