"""Shadowed rules: ``runtime.router.shadowed`` (which entries the router can never return) and
the warnings translation makes of it (Accepted status, located ``ConfigError``, severity
"warning")."""

from __future__ import annotations

import random
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from propylon.config import load_paths, load_text
from propylon.ir.model import MatchIR, PathMatchIR, ValueMatchIR
from propylon.runtime.router import Router, RouterEntry, shadowed
from propylon.standalone import build_snapshot
from propylon.translate import translate_with_issues


@dataclass
class Req:
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def query_param(self, name: str) -> str | None:
        return self.query.get(name)


Spec = tuple[str, str, str, dict[str, Any]]  # name, kind, path, {hosts, method, headers, query}


def entry(name: str, kind: str, path: str, **options: Any) -> Spec:
    return name, kind, path, options


def entries(*specs: Spec) -> list[RouterEntry[str]]:
    out = []
    for order, (name, kind, path, options) in enumerate(specs):
        match = MatchIR(
            PathMatchIR(kind, path),
            options.get("method"),
            tuple(options.get("headers", ())),
            tuple(options.get("query", ())),
        )
        hosts = tuple(options.get("hosts", ()))
        out.append(RouterEntry(hosts, match, name, order))
    return out


def hv(name: str, value: str | None = None, regex: str | None = None) -> ValueMatchIR:
    return ValueMatchIR(name, value, regex)


# (entries, {shadowed name: shadowing name}); names are payloads, so a repeated name is one
# rule's several matches.
# fmt: off
CASES = [
    pytest.param(
        [entry("a", "prefix", "/api"), entry("b", "prefix", "/api")],
        {"b": "a"}, id="identical-later-is-shadowed",
    ),
    pytest.param(
        [entry("a", "prefix", "/api"), entry("b", "prefix", "/api/")],
        {"b": "a"}, id="trailing-slash-is-the-same-prefix",
    ),
    pytest.param(
        [entry("a", "exact", "/x"), entry("b", "exact", "/x")],
        {"b": "a"}, id="identical-exact",
    ),
    pytest.param(
        [entry("a", "regex", "/x/[0-9]+"), entry("b", "regex", "/x/[0-9]+")],
        {"b": "a"}, id="identical-regex",
    ),
    pytest.param(
        [entry("short", "prefix", "/a"), entry("long", "prefix", "/a/b")],
        {}, id="longer-prefix-is-not-shadowed-by-shorter",
    ),
    pytest.param(
        [entry("pre", "prefix", "/a"), entry("ex", "exact", "/a/b")],
        {}, id="exact-is-not-shadowed-by-prefix",
    ),
    pytest.param(
        [entry("root", "prefix", "/"), entry("rx", "regex", "/items/[0-9]+")],
        {}, id="regex-is-not-shadowed-by-root-prefix",
    ),
    pytest.param(
        [entry("all", "regex", ".*"), entry("pre", "prefix", "/api"),
         entry("root", "prefix", "/"), entry("rx", "regex", "/x")],
        {"pre": "all", "root": "all", "rx": "all"}, id="catch-all-regex-shadows-later",
    ),
    pytest.param(
        [entry("rx", "regex", "/x"), entry("all", "regex", ".*")],
        {}, id="catch-all-regex-after-regex",
    ),
    pytest.param(
        [entry("pre", "prefix", "/api"), entry("all", "regex", ".*")],
        {"pre": "all"}, id="catch-all-regex-shadows-earlier-prefix",
    ),
    pytest.param(
        [entry("slash", "regex", "/.*"), entry("pre", "prefix", "/api"),
         entry("root", "prefix", "/")],
        {"pre": "slash"}, id="slash-catch-all-not-for-root",
    ),
    pytest.param(
        [entry("all", "regex", ".*"), entry("ex", "exact", "/a")],
        {}, id="exact-before-regexes",
    ),
    pytest.param(
        [entry("plain", "prefix", "/a"), entry("get", "prefix", "/a", method="GET")],
        {}, id="more-conditions-rank-first",
    ),
    pytest.param(
        [entry("get", "prefix", "/a", method="GET"), entry("get2", "prefix", "/a", method="GET")],
        {"get2": "get"}, id="same-conditions-order",
    ),
    pytest.param(
        [entry("get", "prefix", "/a", method="GET"),
         entry("h", "prefix", "/a", headers=[hv("x", "1")])],
        {}, id="different-conditions",
    ),
    pytest.param(
        [entry("all", "regex", ".*", method="GET"),
         entry("get", "prefix", "/a", method="GET", headers=[hv("x", "1")]),
         entry("post", "prefix", "/a", method="POST")],
        {"get": "all"}, id="conditions-implied",
    ),
    pytest.param(
        [entry("all", "regex", ".*", headers=[hv("x", regex="[0-9]+")]),
         entry("num", "prefix", "/a", headers=[hv("x", "42")]),
         entry("word", "prefix", "/b", headers=[hv("x", "forty")]),
         entry("any", "prefix", "/c")],
        {"num": "all"}, id="value-implies-regex",
    ),
    pytest.param(
        [entry("all", "regex", ".*", query=[hv("debug")]),
         entry("q", "prefix", "/a", query=[hv("debug", "1")])],
        {"q": "all"}, id="value-implies-presence",
    ),
    pytest.param(
        [entry("a", "prefix", "/x", hosts=["a.com"]), entry("b", "prefix", "/x", hosts=["a.com"])],
        {"b": "a"}, id="same-host",
    ),
    pytest.param(
        [entry("any", "prefix", "/x"), entry("host", "prefix", "/x", hosts=["a.com"])],
        {}, id="host-table-tried-before-any-host",
    ),
    pytest.param(
        [entry("a", "prefix", "/x", hosts=["a.com"]),
         entry("b", "prefix", "/x", hosts=["a.com", "b.com"])],
        {}, id="alive-on-one-host",
    ),
    pytest.param(
        [entry("a", "prefix", "/x", hosts=["a.com"]), entry("c", "prefix", "/x", hosts=["b.com"]),
         entry("b", "prefix", "/x", hosts=["a.com", "b.com"])],
        {"b": "a"}, id="shadowed-on-every-host",
    ),
    pytest.param(
        [entry("r", "prefix", "/x"), entry("r", "prefix", "/x")],
        {}, id="one-rules-matches-do-not-shadow-each-other",
    ),
]
# fmt: on


@pytest.mark.parametrize(("specs", "expected"), CASES)
def test_shadowed(specs: list[Spec], expected: dict[str, str]) -> None:
    built = entries(*specs)
    found = shadowed(built)
    assert {built[order].payload: by.payload for order, by in found.items()} == expected


PATHS = ["/", "/a", "/a/", "/a/b", "/a/b/c", "/ab", "/b", "/b/a", "/x/1", "/x/y", "*"]
PATTERNS = [".*", "/.*", "/a/.*", "/a/[ab]", "/b", "/x/[0-9]+"]
TESTS = [hv("x", "1"), hv("x", regex="[0-9]"), hv("x"), hv("y", "2")]


def _random_entry(rnd: random.Random, order: int) -> RouterEntry[int]:
    kind = rnd.choice(["exact", "prefix", "prefix", "regex"])
    value = rnd.choice(PATTERNS) if kind == "regex" else rnd.choice(PATHS[:-1])
    match = MatchIR(
        PathMatchIR(kind, value),
        rnd.choice([None, None, "GET", "POST"]),
        tuple(rnd.sample(TESTS, rnd.choice([0, 0, 1, 2]))),
        tuple(rnd.sample(TESTS, rnd.choice([0, 0, 0, 1]))),
    )
    hosts = rnd.choice([(), (), ("a.com",), ("*.com",), ("a.com", "b.com")])
    return RouterEntry(hosts, match, order, order)


def test_shadowed_entries_are_never_chosen() -> None:
    """Against the router itself: whatever the requests, a shadowed entry never answers."""
    rnd = random.Random(11)
    reported = 0
    for _ in range(400):
        table = [_random_entry(rnd, i) for i in range(rnd.randint(2, 12))]
        dead = shadowed(table)
        reported += len(dead)
        router = Router(table)
        for host in ("a.com", "b.com", "x.com"):
            for method in ("GET", "POST"):
                for path in PATHS:
                    for values in ({}, {"x": "1"}, {"x": "7", "y": "2"}, {"x": "z"}):
                        request = Req(values, values)
                        got = router.match(host, method, path, request)
                        assert got not in dead, (table, host, method, path, values, dead)
    assert reported > 80  # the check above is not vacuous


# --- the warnings translation makes of it -------------------------------------------------

CONFIG = """\
apiVersion: propylon.dev/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  listeners: [{name: web, port: 8080}]
  routeSelector: {namespaces: ["*"]}
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: site, namespace: shop}
spec:
  rules:
    - matches: [{path: {prefix: /}}]
      directResponse: {status: 200, body: home}
    - name: item
      matches: [{path: {regex: "/items/[0-9]+"}}]
      directResponse: {status: 200, body: item}
    - name: api
      matches: [{path: {prefix: /api}}, {path: {exact: /status}}]
      directResponse: {status: 200, body: api}
    - name: again
      matches: [{path: {prefix: /api}}, {path: {exact: /status}}]
      directResponse: {status: 200, body: never}
    - name: half
      matches: [{path: {prefix: /api}}, {path: {exact: /half}}]
      directResponse: {status: 200, body: half}
"""


def test_a_fully_shadowed_rule_is_a_located_warning(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(CONFIG)
    translation = translate_with_issues(load_paths([tmp_path]).resources)
    (issue,) = translation.issues
    assert issue.severity == "warning"
    assert (issue.file, issue.line) == (str(tmp_path / "site.yaml"), 21)  # "- name: again"
    assert (issue.kind, issue.name, issue.field) == ("Route", "shop/site", "spec.rules[3]")
    assert issue.message == (
        "never matches on Gateway infra/edge: Route shop/site rule api takes every request "
        "it matches"
    )
    (status,) = [s for s in translation.snapshot.statuses if s.key == "shop/site"]
    assert status.state == "Accepted"
    assert status.reasons == (f"{issue.field}: {issue.message}",)
    assert len(translation.snapshot.gateways[0].rules) == 5  # still served as written


def test_the_build_runs_with_warnings_only(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(CONFIG)
    result = build_snapshot([tmp_path])
    assert result.snapshot is not None
    assert result.errors == [] and result.warnings == []  # no invalid resource
    assert [i.severity for i in result.issues] == ["warning"]
    assert str(result.issues[0]).startswith(f"{tmp_path / 'site.yaml'}:21:7: Route shop/site: ")


def test_replaced_rules_are_not_reported_but_shadow(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(textwrap.dedent("""\
        apiVersion: propylon.dev/v1
        kind: Gateway
        metadata: {name: edge, namespace: infra}
        spec:
          listeners: [{name: web, port: 8080}]
          routeSelector: {namespaces: ["*"]}
        ---
        apiVersion: propylon.dev/v1
        kind: Route
        metadata: {name: a-broken, namespace: shop}
        spec:
          rules:
            - matches: [{path: {prefix: /x}}]
              forward: {backends: [{upstream: nowhere}]}
            - matches: [{path: {prefix: /x}}]
              directResponse: {status: 200}
        ---
        apiVersion: propylon.dev/v1
        kind: Route
        metadata: {name: b-later, namespace: shop}
        spec:
          rules:
            - matches: [{path: {prefix: /x}}]
              directResponse: {status: 200}
        """))
    issues = translate_with_issues(load_paths([tmp_path]).resources).issues
    assert [(i.severity, i.name, i.line) for i in issues] == [
        ("error", "shop/a-broken", 14),
        ("warning", "shop/b-later", 23),
    ]
    assert "Route shop/a-broken rule #0 takes every request" in issues[1].message


def test_warnings_follow_a_change_of_another_file(tmp_path: Path) -> None:
    """Rules of unchanged files are kept as the same objects from one translation to the next,
    and their buckets with them (``shadows._BUCKETS``): a rule shadowed, then not, then again
    as the other file changes, is reported exactly when a translation from scratch does."""
    gateway, route = CONFIG.split("---\n", 1)
    (tmp_path / "gateway.yaml").write_text(gateway)
    (tmp_path / "site.yaml").write_text(route)
    later = textwrap.dedent("""\
        apiVersion: propylon.dev/v1
        kind: Route
        metadata: {name: later, namespace: shop}
        spec:
          rules:
            - matches: [{path: {exact: PATH}}]
              directResponse: {status: 200, body: later}
        """)
    counts = []
    for path in ("/elsewhere", "/half", "/elsewhere", "/half"):
        (tmp_path / "later.yaml").write_text(later.replace("PATH", path))
        issues = translate_with_issues(load_paths([tmp_path]).resources).issues
        texts = "---\n".join(f.read_text() for f in sorted(tmp_path.glob("*.yaml")))
        fresh = translate_with_issues(load_text(texts).resources).issues
        assert [(i.name, i.message) for i in issues] == [(i.name, i.message) for i in fresh]
        counts.append(len(issues))
    assert counts == [1, 2, 1, 2]  # "half" is shadowed by "later" while it takes /half
