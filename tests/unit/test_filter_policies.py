"""Policy filters without sockets: a fake exchange in, a decision out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from propylon.config import load_paths
from propylon.config.policy import PolicyItem
from propylon.filters import FilterEnv, LocalResponse, _buckets, build_filter
from propylon.filters._buckets import MemoryBuckets, SharedBuckets
from propylon.filters._consumer_acl import ConsumerRestriction
from propylon.ir.model import ConsumerIR, PolicyIR, SnapshotIR
from propylon.policies import auth
from propylon.translate import translate, translate_with_issues
from tests.support.filter_ctx import Ctx


def build(section: dict[str, Any], snapshot: SnapshotIR | None = None) -> Any:
    item = PolicyItem.model_validate(section)
    ((kind, model),) = item.sections()
    env = FilterEnv(None, snapshot)  # these filters use no loop at build time
    return build_filter(PolicyIR(kind, model.model_dump(mode="json", by_alias=True), "t"), env)


def status(answer: Any) -> int | None:
    return answer.status if isinstance(answer, LocalResponse) else None


@pytest.mark.parametrize(
    ("spec", "ip", "expected"),
    [
        pytest.param({"allow": ["10.0.0.0/8"]}, "10.2.3.4", None, id="allowed"),
        pytest.param({"allow": ["10.0.0.0/8"]}, "11.0.0.1", 403, id="not-allowed"),
        pytest.param({"deny": ["10.0.0.0/8"]}, "10.0.0.1", 403, id="denied"),
        pytest.param({"allow": ["0.0.0.0/0"], "deny": ["10.0.0.0/8"]}, "10.0.0.1", 403,
                     id="deny-wins"),
        pytest.param({"allow": ["10.0.0.0/8"]}, "::ffff:10.0.0.1", None, id="v4-mapped"),
        pytest.param({"deny": ["2001:db8::/32"]}, "2001:db8::1", 403, id="v6"),
        pytest.param({"deny": ["10.0.0.0/8"]}, "10.0.0.1:4711", 403, id="v4-with-port"),
        pytest.param({"deny": ["2001:db8::/32"]}, "[2001:db8::1]:4711", 403, id="v6-with-port"),
        pytest.param({"allow": ["10.0.0.0/8"]}, "not-an-address", 403, id="no-address"),
    ],
)
def test_ip_filter(spec: dict[str, Any], ip: str, expected: int | None) -> None:
    f = build({"ipFilter": spec})
    assert status(f.on_request(Ctx(client_ip=ip))) == expected
    assert status(f.on_request(Ctx(client_ip=ip))) == expected  # cached decision


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        pytest.param(b"https://a.example.com", True, id="exact"),
        pytest.param(b"https://x.shop.test", True, id="pattern"),
        pytest.param(b"https://x.y.shop.test", True, id="pattern-deeper"),
        pytest.param(b"https://shop.test", False, id="pattern-needs-label"),
        pytest.param(b"https://x.shop.test.evil.com", False, id="pattern-anchored"),
        pytest.param(b"http://a.example.com", False, id="scheme"),
    ],
)
def test_cors_origins(origin: bytes, allowed: bool) -> None:
    f = build({"cors": {"allowOrigins": ["https://a.example.com", "https://*.shop.test"]}})
    assert f.origin_allowed(origin) is allowed


def test_cors_any_origin_without_credentials() -> None:
    f = build({"cors": {"allowOrigins": ["*"]}})
    ctx = Ctx(headers=[(b"origin", b"https://z.test")])
    assert f.on_request(ctx) is None
    headers: list[tuple[bytes, bytes]] = []
    f.on_response(ctx, 200, headers)
    assert headers == [(b"access-control-allow-origin", b"*")]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([(b"content-length", b"10")], None, id="small"),
        pytest.param([(b"content-length", b"11")], 413, id="large"),
        pytest.param([(b"x", b"y" * 100)], 431, id="headers"),
    ],
)
def test_request_limits(headers: list[tuple[bytes, bytes]], expected: int | None) -> None:
    f = build({"requestLimits": {"maxBodySize": 10, "maxHeaderSize": 64}})
    assert status(f.on_request(Ctx(headers=headers))) == expected


@pytest.mark.parametrize("store", ["memory", "shared"])
def test_token_bucket(store: str, tmp_path: Path) -> None:
    buckets = MemoryBuckets() if store == "memory" else SharedBuckets(str(tmp_path / "rl"))
    results = [buckets.take(42, 3.0, 0.001) for _ in range(4)]
    assert [r[0] for r in results] == [True, True, True, False]
    assert results[3][2] > 900  # about 1000 s until the next token
    assert buckets.take(43, 3.0, 0.001)[0]  # another key has its own bucket


def test_per_worker_table_stays_bounded_and_keeps_live_limits() -> None:
    """The fallback table (no /dev/shm) with three times as many distinct keys as it holds
    (a scan of client IPs): it never holds more than the shared table's slots, a client
    being limited all along stays limited, and an old bucket that is not full again outlives
    the full-again ones."""
    table = MemoryBuckets()
    old, live = 1, 2
    assert table.take(old, 2.0, 0.001)[0]  # 1 token left for ~1000 s
    for _ in range(5):
        assert table.take(live, 5.0, 0.001)[0]
    for key in range(3, 3 * _buckets.SLOTS):
        assert table.take(key, 1.0, 1e9)[0]  # full again at once: dropped first
        if key % 1000 == 0:
            assert not table.take(live, 5.0, 0.001)[0], key
            assert len(table.buckets) <= _buckets.SLOTS, key
    assert table.take(old, 2.0, 0.001)[0] and not table.take(old, 2.0, 0.001)[0]


def test_per_worker_table_forgets_the_least_recently_used_when_none_is_full() -> None:
    table = MemoryBuckets()
    live = 0
    assert table.take(live, 1.0, 0.001)[0]
    for key in range(1, 2 * _buckets.SLOTS):
        table.take(key, 2.0, 0.001)  # none is full again during the test
        if key % 1000 == 0:
            assert not table.take(live, 1.0, 0.001)[0], key  # used all along: kept
            assert len(table.buckets) <= _buckets.SLOTS, key
    assert 2 * _buckets.SLOTS - 1 in table.buckets and 1 not in table.buckets


def test_shared_buckets_seen_by_a_second_mapping(tmp_path: Path) -> None:
    first, second = SharedBuckets(str(tmp_path / "rl")), SharedBuckets(str(tmp_path / "rl"))
    assert first.take(7, 1.0, 0.001)[0]
    assert not second.take(7, 1.0, 0.001)[0]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        pytest.param({"jwt": {}}, "exactly one of jwks, keys", id="jwt-no-keys"),
        pytest.param({"rateLimit": {"limits": [{"requests": 1, "per": "1s", "key": ["ip"]}]}},
                     'invalid key "ip"', id="bad-descriptor"),
        pytest.param({"cors": {"allowOrigins": ["*"], "allowCredentials": True}},
                     "allowCredentials", id="cors-credentials-any"),
        pytest.param({"ipFilter": {"allow": ["10.0.0.0/33"]}}, "invalid CIDR", id="cidr"),
        pytest.param({"extAuth": {"url": "ftp://x"}}, "should match pattern", id="ext-url"),
        pytest.param({"apiKey": {"consumers": {}}}, "consumers needs allow, deny",
                     id="consumers-empty"),
        pytest.param({"apiKey": {"consumers": {"allow": []}}}, "at least 1 item",
                     id="consumers-empty-allow"),
        pytest.param({"basicAuth": {"consumers": {"deny": ["a/b/c"]}}},
                     'invalid Consumer "a/b/c"', id="consumers-bad-ref"),
        pytest.param({"jwt": {"keys": [{"file": "k"}], "consumers": {"allow": ["a"]}}},
                     "Extra inputs", id="jwt-has-no-consumers"),
        pytest.param({"cache": {"redis": {"password": {"secret": "pw"}}}}, "never inline",
                     id="redis-password-inline"),
        pytest.param({"rateLimit": {"limits": [{"requests": 1, "per": "1s"}],
                                    "redis": {"username": "u"}}},
                     "a Redis username needs a password", id="redis-username-alone"),
    ],
)
def test_invalid_sections(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PolicyItem.model_validate(section)


CONSUMERS = """apiVersion: propylon.dev/v1
kind: Consumer
metadata: {name: acme}
spec:
  labels: {tier: gold}
  credentials:
    apiKeys: [{secretRef: {file: key.txt}}]
    basicAuth: [{username: al, secretRef: {env: PROPYLON_TEST_PW}}]
---
apiVersion: propylon.dev/v1
kind: Consumer
metadata: {name: missing}
spec:
  credentials: {apiKeys: [{secretRef: {file: nope.txt}}]}
"""


def test_consumers_hashed_at_translation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "c.yaml").write_text(CONSUMERS)
    (tmp_path / "key.txt").write_text("raw-key-value\n")
    monkeypatch.setenv("PROPYLON_TEST_PW", "pw")
    snapshot = translate(load_paths([tmp_path]).resources)
    (acme,) = snapshot.consumers
    assert acme.labels == {"tier": "gold"}
    assert "raw-key-value" not in repr(snapshot) and "'pw'" not in repr(snapshot)
    status_of = {s.key: s for s in snapshot.statuses if s.kind == "Consumer"}
    assert status_of["default/missing"].state == "Invalid"
    assert "cannot read secret file nope.txt" in status_of["default/missing"].reasons[0]
    f = build({"apiKey": {"query": "k"}}, snapshot)
    ctx = Ctx(query=b"a=1&k=raw-key-value")
    assert f.on_request(ctx) is None
    assert ctx.query == b"a=1"
    assert (b"x-consumer-name", b"acme") in ctx.request_headers
    assert status(f.on_request(Ctx(query=b"k=other"))) == 401


@pytest.mark.parametrize(
    ("spec", "admitted"),
    [
        pytest.param({"allow": ["a"]}, {"default/a", "team/a"}, id="bare-name-any-namespace"),
        pytest.param({"allow": ["team/a"]}, {"team/a"}, id="namespaced-name"),
        pytest.param({"deny": ["a"]}, {"default/b"}, id="deny"),
        pytest.param({"allowLabels": {"tier": ["gold", "silver"]}}, {"default/a", "default/b"},
                     id="label-values"),
        pytest.param({"allowLabels": {"tier": ["gold"], "region": ["eu"]}}, {"default/a"},
                     id="every-allow-label"),
        pytest.param({"denyLabels": {"region": ["eu"], "tier": ["bronze"]}}, {"default/b"},
                     id="any-deny-label"),
        pytest.param({"allow": ["b"], "allowLabels": {"tier": ["bronze"]}},
                     {"default/b", "team/a"}, id="name-or-labels"),
        pytest.param({"allow": ["a"], "deny": ["team/a"]}, {"default/a"}, id="deny-wins"),
    ],
)
def test_consumer_restriction(spec: dict[str, Any], admitted: set[str]) -> None:
    consumers = [
        ConsumerIR("default/a", "a", {"tier": "gold", "region": "eu"}),
        ConsumerIR("default/b", "b", {"tier": "silver"}),
        ConsumerIR("team/a", "a", {"tier": "bronze", "region": "eu"}),
    ]
    restriction = ConsumerRestriction(auth.ConsumerRestriction.model_validate(spec))
    assert {c.key for c in consumers if restriction.admits(c)} == admitted


RESTRICTED = CONSUMERS + """---
apiVersion: propylon.dev/v1
kind: Policy
metadata: {name: gold-only}
spec:
  targetRefs: [{kind: Route, name: api}]
  basicAuth:
    consumers:
      allow: [acme, acmee]
      allowLabels: {tier: platinum}
"""


SHARED_RESTRICTION = CONSUMERS + """---
apiVersion: propylon.dev/v1
kind: Gateway
metadata: {name: edge}
spec:
  listeners: [{name: http, port: 8080}]
  policies:
    - apiKey: {consumers: {allow: [nobody]}}
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: one}
spec:
  rules:
    - directResponse: {status: 200}
    - directResponse: {status: 200}
      policies:
        - apiKey: {consumers: {allow: [acmee]}}
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: two}
spec:
  rules:
    - directResponse: {status: 200}
      policies:
        - headers: {response: {set: {x-a: b}}}
        - apiKey: {consumers: {allow: [acmee]}}
"""


def test_consumer_restrictions_of_a_shared_policy_item_reported_at_each_use(
        tmp_path: Path) -> None:
    """The loader shares equal policy items between rules (one object); the check judges
    each item once, and still reports every place it is used, at that place."""
    (tmp_path / "c.yaml").write_text(SHARED_RESTRICTION)
    resources = load_paths([tmp_path]).resources
    one, two = (r for r in resources if r.kind == "Route")
    assert one.spec.rules[1].policies[0] is two.spec.rules[0].policies[1]
    translation = translate_with_issues(resources)
    warnings = [(i.kind, i.name, i.line, i.field, i.message) for i in translation.issues
                if i.severity == "warning" and "Consumer" in i.message]
    assert warnings == [
        ("Gateway", "default/edge", 22, "spec.policies[0].apiKey.consumers.allow[0]",
         'no Consumer named "nobody"'),
        ("Route", "default/one", 32, "spec.rules[1].policies[0].apiKey.consumers.allow[0]",
         'no Consumer named "acmee"'),
        ("Route", "default/two", 42, "spec.rules[0].policies[1].apiKey.consumers.allow[0]",
         'no Consumer named "acmee"'),
    ]


def test_consumer_restriction_names_checked_at_translation(tmp_path: Path) -> None:
    """Warnings located at the entry, for validate to print with file:line."""
    (tmp_path / "c.yaml").write_text(RESTRICTED)
    translation = translate_with_issues(load_paths([tmp_path]).resources)
    warnings = [(i.line, i.field, i.message) for i in translation.issues
                if i.severity == "warning"]
    assert warnings == [
        (23, "spec.basicAuth.consumers.allow[1]", 'no Consumer named "acmee"'),
        (24, "spec.basicAuth.consumers.allowLabels", "no Consumer has these labels"),
    ]
