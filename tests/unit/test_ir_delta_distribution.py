"""Deltas from the control plane to proxies (``controlplane/ir_deltas.py``, the agent's
``rebuild``): made once per base and version, applied only when they rebuild the very version
named, refused (so the full snapshot is fetched) otherwise."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from propylon import ir
from propylon.controlplane.ir_deltas import SnapshotHistory, reads_deltas
from propylon.controlplane.state import PartTexts, ShardStatuses, own_statuses, shard, shard_all
from propylon.ir import schema
from propylon.ir.codec import same_ends
from propylon.ir.delta import dumps_delta, loads_delta
from propylon.proxy.agent import Agent
from propylon.proxy.ir_cache import IRCache

NATIVE = schema.CURRENT.native
GATEWAY = "a/edge"
Data = dict[str, Any]
Versions = tuple[ir.SnapshotIR, ir.SnapshotIR]


def _rule(i: int) -> ir.RuleIR:
    return ir.RuleIR(f"route:a/r{i}:0", f"Route a/r{i}", None, (),
                     (ir.MatchIR(ir.PathMatchIR("prefix", f"/r{i}")),),
                     ir.ForwardIR((ir.BackendIR("a/u", 1),)))


def _version(rules: tuple[ir.RuleIR, ...]) -> ir.SnapshotIR:
    gateway = ir.GatewayIR(GATEWAY, (ir.ListenerIR("web", 8080),), rules,
                           (ir.UpstreamIR("a/u", (ir.EndpointIR("127.0.0.1", 80),)),))
    statuses = tuple(ir.StatusIR("Route", f"a/r{i}", "Accepted", gateways=(GATEWAY,))
                     for i in range(len(rules)))
    return ir.seal(ir.SnapshotIR(gateways=(gateway,), statuses=statuses))


@pytest.fixture
def versions() -> Versions:
    """A version of 20 rules and the next one, one rule added, the rest the same objects."""
    rules = tuple(_rule(i) for i in range(20))
    base = _version(rules)
    new = _version((*base.gateways[0].rules, _rule(20)))
    new = dataclasses.replace(new, statuses=(*base.statuses, new.statuses[-1]))
    return base, ir.seal(dataclasses.replace(new, version=""))


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return Agent("http://127.0.0.1:1", GATEWAY, "token", IRCache(tmp_path, GATEWAY))


def _held(snapshot: ir.SnapshotIR) -> ir.SnapshotIR:
    """The proxy's own copy, decoded from the text (no object shared with the control plane)."""
    return schema.CURRENT.decode(ir.dumps(snapshot))


def test_a_delta_rebuilds_the_version_on_the_proxys_objects(versions: Versions,
                                                            agent: Agent) -> None:
    base, new = versions
    history = SnapshotHistory()
    history.keep(GATEWAY, base)
    history.keep(GATEWAY, new)
    body = history.delta(GATEWAY, base.version, new)
    assert body is not None and len(body) < len(ir.dumps(new)) / 2
    held = _held(base)
    snapshot = agent.rebuild(held, body, base.version, new.version)
    assert snapshot is not None
    assert snapshot == new and snapshot.version == new.version
    assert ir.dumps(snapshot) == ir.dumps(new)  # the text the cache gets a second later
    assert snapshot.gateways[0].rules[5] is held.gateways[0].rules[5]


def test_a_delta_is_encoded_once_for_every_proxy(versions: Versions) -> None:
    base, new = versions
    history = SnapshotHistory()
    history.keep(GATEWAY, base)
    assert history.delta(GATEWAY, base.version, new) is history.delta(GATEWAY, base.version,
                                                                       new)


def test_no_delta_from_a_version_not_held(versions: Versions) -> None:
    base, new = versions
    history = SnapshotHistory(kept=2)
    assert history.delta(GATEWAY, base.version, new) is None
    history.keep(GATEWAY, base)
    for i in range(2):
        history.keep(GATEWAY, _version(tuple(_rule(j) for j in range(i + 1))))
    assert history.previous(GATEWAY, base.version) is None  # the oldest is forgotten
    assert history.delta(GATEWAY, base.version, new) is None
    history.retain([])
    assert history.previous(GATEWAY, new.version) is None


def _tampered(body: bytes, change: Callable[[Data], None]) -> bytes:
    data = json.loads(body)
    change(data["snapshot"])
    return json.dumps(data).encode()


def _swap_two_rules(data: Data) -> None:
    rules = data["gateways"][0]["rules"]
    rules[0], rules[1] = rules[1], rules[0]


def _edit_new_rule(data: Data) -> None:
    data["gateways"][0]["rules"][-1]["matches"][0]["path"]["value"] = "/elsewhere"


def _index_out_of_range(data: Data) -> None:
    data["gateways"][0]["rules"][0] = 999


@pytest.mark.parametrize("change", [
    pytest.param(_swap_two_rules, id="rules-reordered"),
    pytest.param(_edit_new_rule, id="changed-rule"),
    pytest.param(_index_out_of_range, id="index-out-of-range"),
])
def test_a_delta_that_rebuilds_anything_else_is_refused(versions: Versions, agent: Agent,
                                                        change: Callable[[Data], None]) -> None:
    base, new = versions
    history = SnapshotHistory()
    history.keep(GATEWAY, base)
    body = history.delta(GATEWAY, base.version, new)
    assert body is not None
    assert agent.rebuild(_held(base), _tampered(body, change), base.version,
                         new.version) is None


def test_a_delta_against_another_version_or_unreadable_is_refused(versions: Versions,
                                                                  agent: Agent) -> None:
    base, new = versions
    history = SnapshotHistory()
    history.keep(GATEWAY, base)
    body = history.delta(GATEWAY, base.version, new)
    assert body is not None
    other = _version((_rule(7),))
    assert agent.rebuild(_held(other), body, base.version, new.version) is None
    assert agent.rebuild(_held(other), body, other.version, new.version) is None  # mismatch
    assert agent.rebuild(None, body, base.version, new.version) is None
    assert agent.rebuild(_held(base), b"{not json", base.version, new.version) is None
    assert agent.rebuild(_held(base), body, base.version, "0" * 16) is None  # named another


@pytest.mark.parametrize(("delta", "reads", "snapshot_schema", "expected"), [
    pytest.param(str(NATIVE), (NATIVE,), NATIVE, True, id="same-schema"),
    pytest.param(None, (NATIVE,), NATIVE, False, id="proxy-without-deltas"),
    pytest.param(str(NATIVE + 1), (NATIVE, NATIVE + 1), NATIVE, False, id="newer-proxy"),
    pytest.param(str(NATIVE), (NATIVE,), NATIVE + 1, False, id="snapshot-in-another-schema"),
    pytest.param(str(NATIVE), (NATIVE + 7,), NATIVE, False, id="no-schema-in-common"),
])
def test_who_gets_deltas(delta: str | None, reads: tuple[int, ...], snapshot_schema: int,
                         expected: bool) -> None:
    snapshot = ir.SnapshotIR(gateways=(), statuses=(), schema=snapshot_schema)
    assert reads_deltas(delta, reads, snapshot) is expected


def test_shards_keep_unchanged_objects_and_encode_like_a_fresh_seal() -> None:
    """``shard_all`` seals each Gateway with its own rule texts (``codec.part_texts``): the
    texts equal those of sealing from scratch, an unchanged shard stays the same object, and
    a changed one shares the previous shard's rules (so deltas to proxies are small)."""
    def snapshot(extra: int) -> ir.SnapshotIR:
        rules = [tuple(_rule(i) for i in range(10)), tuple(_rule(i) for i in range(10, 20))]
        rules[1] += tuple(_rule(100 + i) for i in range(extra))
        gateways = tuple(ir.GatewayIR(f"a/g{n}", (ir.ListenerIR("web", 8080 + n),), rules[n], ())
                         for n in range(2))
        return ir.SnapshotIR(gateways=gateways, statuses=())

    parts: PartTexts = {}
    first, texts = shard_all(snapshot(0), {}, {}, parts)
    second, texts2 = shard_all(snapshot(1), first, texts, parts)
    assert second["a/g0"] is first["a/g0"] and texts2["a/g0"] is texts["a/g0"]
    assert second["a/g1"].version != first["a/g1"].version
    for key, text in texts2.items():
        fresh = shard(snapshot(1), next(g for g in snapshot(1).gateways if g.key == key))
        assert text == ir.dumps(fresh) and second[key].version == fresh.version
    kept = {id(r) for r in first["a/g1"].gateways[0].rules}
    assert sum(id(r) in kept for r in second["a/g1"].gateways[0].rules) == 10
    shard_all(ir.SnapshotIR(gateways=snapshot(0).gateways[:1], statuses=()), second, texts2,
              parts)
    assert set(parts) == {"a/g0"}


def test_a_shard_names_only_its_own_gateway_in_statuses() -> None:
    """A Route selected by two Gateways: each Gateway's shard carries its status naming that
    Gateway only (the control plane's own statuses keep both), and an unchanged status stays
    the same object in the next shard, so it is never part of a delta."""
    rules = tuple(_rule(i) for i in range(3))
    gateways = tuple(ir.GatewayIR(f"a/g{n}", (ir.ListenerIR("web", 8080 + n),), rules, ())
                     for n in range(2))
    both = ir.StatusIR("Route", "a/r0", "Accepted", (), ("a/g0", "a/g1"))
    alone = ir.StatusIR("Route", "a/r1", "Invalid", ("no such upstream",), ("a/g1",))
    snapshot = ir.SnapshotIR(gateways=gateways, statuses=(both, alone))
    parts: PartTexts = {}
    statuses: ShardStatuses = {}
    first, _ = shard_all(snapshot, {}, {}, parts, statuses)
    assert first["a/g0"].statuses == (dataclasses.replace(both, gateways=("a/g0",)),)
    assert first["a/g1"].statuses == (dataclasses.replace(both, gateways=("a/g1",)), alone)
    assert first["a/g1"].statuses[1] is alone  # already its Gateway's only
    fresh = shard(snapshot, gateways[1])
    assert fresh.statuses == first["a/g1"].statuses and fresh.version == first["a/g1"].version

    added = ir.StatusIR("Route", "a/r2", "Accepted", (), ("a/g0", "a/g1"))
    second, _ = shard_all(dataclasses.replace(snapshot, statuses=(both, alone, added)),
                          first, {}, parts, statuses)
    for key in ("a/g0", "a/g1"):
        assert second[key].statuses[0] is first[key].statuses[0]
        assert second[key].statuses[-1].gateways == (key,)
    assert len(statuses) == 3  # the memo holds the statuses of the last call only


@pytest.mark.parametrize("named", [
    [("a/g0",), (), ("a/g0",)], [(), ()], [], [("a/g0",), ("a/g1",)],
    [("a/g0",), ("a/g0", "a/g1"), ()],
])
def test_each_gateway_owns_its_statuses_in_order(named: list[tuple[str, ...]]) -> None:
    """What each shard carries (``own_statuses``), whether every status names one Gateway at
    most (a status is carried as it is) or some name several (each shard's names its own)."""
    statuses = [ir.StatusIR("Route", f"a/r{i}", "Accepted", (), gateways)
                for i, gateways in enumerate(named)]
    expected: dict[str, list[ir.StatusIR]] = {}
    for status in statuses:
        for key in status.gateways:
            expected.setdefault(key, []).append(dataclasses.replace(status, gateways=(key,)))
    got = own_statuses(statuses, {})
    assert got == expected
    for key, owned in got.items():
        alone = [s for s in statuses if s.gateways == (key,)]
        assert [s for s in owned if s in alone] == alone
        assert all(any(s is a for a in alone) for s in owned if s in alone)  # not copies


@pytest.mark.parametrize("order", [
    [0, 1, 2, 3], [1, 0, 2, 3], [3, 2, 1, 0], [0, 2, 3], ["new", 0, 1, 2, 3], [0, 1, "new", 3],
    [2, 3, 0, 1, "new"], ["new"], [], [0, 1, 2, 3, "new"], [1, 2, 3], [0, 1, 2], [0, 3],
    ["new", 1, 2, 3], [0, 1, 2, "new"],
])
def test_a_delta_names_every_held_object_by_its_index(order: list[int | str]) -> None:
    """Rules kept, moved, dropped or added: the delta names each rule the proxy holds by its
    index there (wherever it moved) and writes only the new one, or, with runs, consecutive
    indices as one [first, end]; the proxy rebuilds exactly the new version's rules from
    either form, on its own objects."""
    held = tuple(_rule(i) for i in range(4))
    added = _rule(99)
    rules = tuple(added if i == "new" else held[int(i)] for i in order)
    base = ir.seal(_version(held))
    new = ir.seal(_version(rules))
    data = json.loads(dumps_delta(new, base))["snapshot"]["gateways"][0]["rules"]
    assert data == [i if i != "new" else ir.to_data(added) for i in order]
    runs = json.loads(dumps_delta(new, base, runs=True))["snapshot"]["gateways"][0]["rules"]
    assert runs == _as_runs(data)
    for text in (dumps_delta(new, base), dumps_delta(new, base, runs=True)):
        rebuilt = loads_delta(text, base)
        assert rebuilt.gateways[0].rules == rules
        assert all(r is held[int(i)] for r, i in zip(rebuilt.gateways[0].rules, order,
                                                      strict=True) if i != "new")
        # the ends in place, noted from the delta, are what comparing every item finds
        compared = same_ends(list(rebuilt.gateways[0].rules), base.gateways[0].rules)
        assert same_ends(rebuilt.gateways[0].rules, base.gateways[0].rules) == compared
        assert same_ends(rebuilt.statuses, base.statuses) == \
            same_ends(list(rebuilt.statuses), base.statuses)


def _as_runs(items: list[Any]) -> list[Any]:
    """What runs make of single indices, written the plain way: each stretch of two or more
    consecutive indices as [first, end]."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, int) and out and isinstance(out[-1], list) and out[-1][1] == item:
            out[-1][1] = item + 1
        elif isinstance(item, int) and out and isinstance(out[-1], int) and out[-1] + 1 == item:
            out[-1] = [out[-1], item + 1]
        else:
            out.append(item)
    return out


def test_a_delta_of_one_added_rule_among_thousands_is_small() -> None:
    held = tuple(_rule(i) for i in range(5000))
    base = ir.seal(_version(held))
    new = ir.seal(_version((*held[:2500], _rule(99999), *held[2500:])))
    data = json.loads(dumps_delta(new, base, runs=True))["snapshot"]["gateways"][0]["rules"]
    assert data == [[0, 2500], ir.to_data(_rule(99999)), [2500, 5000]]
    assert loads_delta(dumps_delta(new, base, runs=True), base).gateways[0].rules == \
        new.gateways[0].rules


@pytest.mark.parametrize("run", [[0, 9], [2, 1], [-1, 2], [0], [0, 1, 2], ["0", 2], [0, 1.5],
                                 [True, 2]])
def test_a_run_the_proxy_does_not_hold_is_refused(run: list[Any]) -> None:
    """An index run outside what the proxy holds, or not two integers, fails the decoding
    (the agent then fetches the full IR), never rebuilds a shorter or other list."""
    held = tuple(_rule(i) for i in range(4))
    base = ir.seal(_version(held))
    text = json.loads(dumps_delta(base, base, runs=True))
    text["snapshot"]["gateways"][0]["rules"] = [run]
    with pytest.raises((IndexError, TypeError, ValueError)):
        loads_delta(json.dumps(text), base)


def test_sealing_again_hashes_what_a_fresh_seal_hashes() -> None:
    """Sealing resumes the hash from where the text first differs from the last sealed
    text (``codec.PartTexts``): over edits anywhere in the rules and statuses, in a
    configuration of several hash chunks, the version is always a fresh seal's."""
    import random

    from propylon.ir import codec

    rng = random.Random(3)
    rules = [_rule(i) for i in range(3000)]  # two pieces a rule, 512 pieces a chunk
    statuses = [ir.StatusIR("Route", f"a/r{i}", "Accepted", (), (GATEWAY,)) for i in range(50)]
    memo = codec.PartTexts()
    for step in range(40):
        where = rng.randrange(len(rules) + 1)
        kind = rng.choice(["add", "drop", "edit", "status", "none"])
        if kind == "add":
            rules.insert(where, _rule(10_000 + step))
        elif kind == "drop" and rules:
            rules.pop(min(where, len(rules) - 1))
        elif kind == "edit" and rules:
            at = min(where, len(rules) - 1)
            rules[at] = dataclasses.replace(rules[at], name=f"edited{step}")
        elif kind == "status":
            at = rng.randrange(len(statuses))
            statuses[at] = dataclasses.replace(statuses[at], state="Invalid",
                                               reasons=(f"step {step}",))
        snapshot = dataclasses.replace(_version(tuple(rules)), statuses=tuple(statuses))
        with codec.part_texts(memo):
            sealed = ir.seal(dataclasses.replace(snapshot, version=""))
        assert sealed.version == ir.content_hash(snapshot), (step, kind, where)
        assert ir.dumps(sealed) == ir.dumps(ir.seal(snapshot))


def test_sealing_two_configurations_in_turn_with_one_memo() -> None:
    """A memo shared by encodings of different snapshots (another thread's, or the shared
    default one) only ever resumes from a text that starts the same: each version is still
    a fresh seal's."""
    from propylon.ir import codec

    memo = codec.PartTexts()
    first = [_rule(i) for i in range(2000)]
    second = [_rule(i) for i in range(1000)] + [_rule(5000 + i) for i in range(1000)]
    for step in range(6):
        for rules in (first, second):
            rules.append(_rule(9000 + step))
            snapshot = _version(tuple(rules))
            with codec.part_texts(memo):
                sealed = ir.seal(dataclasses.replace(snapshot, version=""))
            assert sealed.version == ir.content_hash(snapshot), step
