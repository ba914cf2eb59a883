"""Containment of invalid resources (issue #15 item 4): which documents the loader keeps as
rejected, what ``recover`` keeps of them, and how translation contains them."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from propylon.config import Gateway, Route, load_text, recover, recover_target_refs
from propylon.translate import translate_with_issues

GATEWAY = """
apiVersion: propylon.dev/v1
kind: Gateway
metadata: {name: gw}
spec:
  listeners: [{name: web, port: 8080}]
  routeSelector: {namespaces: ["*"]}
"""


def doc(kind: str, spec: Any, name: str = "x", namespace: str = "team", **meta: Any) -> str:
    metadata = {"name": name, "namespace": namespace, **meta}
    return yaml.safe_dump({"apiVersion": "propylon.dev/v1", "kind": kind,
                           "metadata": metadata, "spec": spec}, sort_keys=False)


def rejected_one(text: str) -> Any:
    loaded = load_text(text, "c.yaml")
    assert not loaded.unattributed and len(loaded.rejected) == 1, loaded
    return loaded.rejected[0]


def route_rule(path: str = "/a", **extra: Any) -> dict[str, Any]:
    return {"matches": [{"path": {"prefix": path}}], **extra}


FORWARD_BAD = {"forward": {"backends": [{"upstream": "up", "weight": "heavy"}]}}
DIRECT = {"directResponse": {"status": 200}}


@pytest.mark.parametrize(
    ("spec", "paths"),
    [
        pytest.param({"rules": [route_rule(**FORWARD_BAD)]}, ["/a"], id="wrong-type"),
        pytest.param({"rules": [route_rule(**DIRECT, bogus=1), route_rule("/b", **DIRECT)]},
                     ["/a", "/b"], id="unknown-field-in-a-rule"),
        pytest.param({"rules": [{**FORWARD_BAD}, route_rule("/b", **FORWARD_BAD)]}, ["/b"],
                     id="a-rule-without-written-matches-is-not-widened"),
        pytest.param({"rules": [{"matches": [{"path": {"prefix": 5}}], **DIRECT},
                                route_rule("/b", forward={})]}, ["/b"],
                     id="a-rule-whose-matches-fail-is-dropped"),
        pytest.param({"hostnames": ["a.test"], "rules": [route_rule(forward={})]}, ["/a"],
                     id="hostnames-kept"),
    ],
)
def test_a_route_keeps_its_readable_matches(spec: dict[str, Any], paths: list[str]) -> None:
    route = recover(rejected_one(doc("Route", spec)))
    assert isinstance(route, Route)
    assert [r.matches[0].path.prefix for r in route.spec.rules] == paths
    assert all(r.direct_response is not None for r in route.spec.rules)  # placeholders
    assert route.spec.hostnames == spec.get("hostnames", [])
    assert route.source is not None and route.source.file == "c.yaml"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(doc("Route", {"hostname": ["a.test"], "rules": [route_rule(**DIRECT)]}),
                     id="misspelt-hostnames-could-widen"),
        pytest.param(doc("Route", {"hostnames": ["-bad-"], "rules": [route_rule(**DIRECT)]}),
                     id="bad-hostnames"),
        pytest.param(doc("Route", {"rules": "none"}), id="rules-not-a-list"),
        pytest.param(doc("Route", {"rules": [{**FORWARD_BAD}]}), id="no-rule-left"),
        pytest.param(doc("Gateway", {"listeners": [{"name": "web", "port": "http"}]}),
                     id="gateway-without-listeners"),
        pytest.param(doc("Upstream", {"endpoints": 5}), id="upstream"),
    ],
)
def test_nothing_recovered(text: str) -> None:
    assert recover(rejected_one(text)) is None


@pytest.mark.parametrize(
    ("text", "key", "labels"),
    [
        pytest.param(doc("Route", {"rules": [route_rule(**DIRECT)]}, name="Bad_Name",
                         labels={"team": "a"}), "team/Bad_Name", {"team": "a"}, id="bad-name"),
        pytest.param(doc("Route", {"rules": [route_rule(**DIRECT)]}, labels=["a"]),
                     "team/x", {}, id="bad-labels"),
    ],
)
def test_a_route_with_invalid_metadata_is_known_by_its_key(
    text: str, key: str, labels: dict[str, str]
) -> None:
    """As a Kubernetes object is (``recover_kubernetes``): the key as written, valid labels
    only (selectors only require labels, so none never selects more)."""
    route = recover(rejected_one(text))
    assert isinstance(route, Route)
    assert (route.key, route.metadata.labels) == (key, labels)
    assert [r.matches[0].path.prefix for r in route.spec.rules] == ["/a"]
    assert all(r.direct_response is not None for r in route.spec.rules)


def test_a_delegating_rule_keeps_delegating_only_when_it_is_its_only_action() -> None:
    select = {"selector": {"namespaces": ["other"]}}
    spec = {"rules": [route_rule("/d", delegate=select, bogus=1),
                      route_rule("/e", delegate=select, directResponse={"status": 200})]}
    route = recover(rejected_one(doc("Route", spec)))
    assert isinstance(route, Route)
    assert [r.delegate is not None for r in route.spec.rules] == [True, False]


def test_a_gateway_keeps_its_listeners() -> None:
    spec = {"listeners": [{"name": "web", "port": 8080}], "policies": [{"cors": 5}]}
    gateway = recover(rejected_one(doc("Gateway", spec)))
    assert isinstance(gateway, Gateway)
    assert [lst.port for lst in gateway.spec.listeners] == [8080]
    assert gateway.spec.policies == []


@pytest.mark.parametrize(
    ("refs", "kinds"),
    [
        pytest.param([{"kind": "Gateway", "name": "gw"}, {"kind": "Route", "name": "r"}],
                     ["Gateway", "Route"], id="readable"),
        pytest.param([{"kind": "Gateway", "name": "gw"}, {"kind": "Route"}], None,
                     id="one-unreadable"),
        pytest.param("gw", None, id="not-a-list"),
    ],
)
def test_a_policys_targets(refs: Any, kinds: list[str] | None) -> None:
    rejected = rejected_one(doc("Policy", {"targetRefs": refs, "cors": 5}))
    found = recover_target_refs(rejected)
    assert (None if found is None else [ref.kind for ref in found]) == kinds


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("kind: [unclosed\n", id="yaml-syntax"),
        pytest.param(doc("Rout", {}), id="unknown-kind"),
        pytest.param("apiVersion: propylon.dev/v1\nkind: Route\nspec: {}\n", id="no-name"),
        pytest.param("- a list\n", id="not-a-mapping"),
    ],
)
def test_errors_that_name_no_resource_are_unattributed(text: str) -> None:
    loaded = load_text(text, "c.yaml")
    assert loaded.errors and loaded.unattributed == loaded.errors
    assert not loaded.rejected


def test_a_schema_error_is_still_an_error_for_validate() -> None:
    loaded = load_text(doc("Route", {"rules": [route_rule(**FORWARD_BAD)]}), "c.yaml")
    assert not loaded.ok and loaded.errors == list(loaded.rejected[0].errors)
    assert str(loaded.errors[0]).startswith("c.yaml:")


def test_a_second_definition_is_rejected_and_fails_the_resource_closed() -> None:
    route = doc("Route", {"rules": [route_rule(**DIRECT)]})
    loaded = load_text(GATEWAY + "---\n" + route + "---\n" + route, "c.yaml")
    assert [r.ref for r in loaded.rejected] == ["Route team/x"]
    snapshot = translate_with_issues(loaded.resources, loaded.rejected).snapshot
    (rule,) = snapshot.gateways[0].rules
    assert rule.replaced and rule.matches[0].path.value == "/a"
    status = next(s for s in snapshot.statuses if s.key == "team/x")
    assert status.state == "Invalid" and "defined twice" in status.reasons


def test_every_definition_of_a_resource_written_again_is_reported() -> None:
    """A Route written three times, the third time with a schema error as well: the second
    and third definitions are both reported (``validate`` prints the issues), and the status
    gives the reasons of each."""
    route = doc("Route", {"rules": [route_rule(**DIRECT)]})
    broken = doc("Route", {"rules": [route_rule(**FORWARD_BAD)]})
    loaded = load_text(GATEWAY + "---\n" + route + "---\n" + route + "---\n" + broken,
                       "c.yaml")
    assert len(loaded.rejected) == 2
    translation = translate_with_issues(loaded.resources, loaded.rejected)
    assert [str(issue) for issue in translation.issues] == [str(e) for e in loaded.errors]
    status = next(s for s in translation.snapshot.statuses if s.key == "team/x")
    assert "defined twice" in status.reasons and len(status.reasons) > 2, status.reasons


def test_rejected_resources_give_located_issues() -> None:
    text = GATEWAY + "---\n" + doc("Route", {"rules": [route_rule(**FORWARD_BAD)]})
    loaded = load_text(text, "c.yaml")
    translation = translate_with_issues(loaded.resources, loaded.rejected)
    assert [str(issue) for issue in translation.issues] == [str(e) for e in loaded.errors]
    (rule,) = translation.snapshot.gateways[0].rules
    assert rule.replaced and rule.route == "Route team/x"


def test_containment_is_deterministic() -> None:
    texts = [GATEWAY, doc("Route", {"rules": [route_rule(**FORWARD_BAD)]}),
             doc("Policy", {"targetRefs": [{"kind": "Route", "name": "y"}], "cors": 5},
                 name="p"),
             doc("Route", {"rules": [route_rule("/y", **DIRECT)]}, name="y")]
    versions = set()
    for order in (texts, list(reversed(texts))):
        loaded = load_text("---\n".join(order), "c.yaml")
        versions.add(translate_with_issues(loaded.resources, loaded.rejected).snapshot.version)
    assert len(versions) == 1
