"""``build_snapshot``'s ``preview`` (``propylon run``'s first build of a large configuration):
the snapshots of growing parts of the Routes in key order, each given before the next is
translated; each part, and the whole, then has the part before's rules as its first rules,
the same objects (the workers compiled them: what is sent next is a delta against it), and
the whole the version a build without parts gives. Not given for a small configuration, nor
one with invalid resources."""

from __future__ import annotations

from pathlib import Path

import pytest

from propylon import ir, standalone
from tests.support import resources as r


def write(folder: Path, count: int, extra: str = "") -> None:
    folder.mkdir(exist_ok=True)
    (folder / "gateway.yaml").write_text(r.dump(r.gateway(8080)))
    # written out of key order: the part sent first is the first in key order
    routes = [r.route(f"r{i:03d}", rules=[r.rule({"exact": f"/r{i}"},
                                                   directResponse={"status": 200})])
              for i in reversed(range(count))]
    (folder / "routes.yaml").write_text(r.dump(*routes) + extra)


@pytest.fixture(autouse=True)
def small_previews(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(standalone, "PREVIEW_MIN_ROUTES", 20)


def test_the_first_routes_are_given_first_and_the_whole_extends_them(tmp_path: Path) -> None:
    write(tmp_path / "config", 40)
    given: list[ir.SnapshotIR] = []
    result = standalone.build_snapshot([tmp_path / "config"], preview=given.append)
    assert result.snapshot is not None and len(given) == len(standalone.PREVIEW_SHARES) == 2
    parts = [snapshot.gateways[0].rules for snapshot in given]
    whole = result.snapshot.gateways[0].rules
    for part, share in zip(parts, standalone.PREVIEW_SHARES, strict=True):
        assert len(part) == int(40 * share)
        assert [rule.route for rule in part] == [f"Route default/r{i:03d}"
                                                 for i in range(len(part))]
    for part, after in zip(parts, [*parts[1:], whole], strict=True):
        assert all(a is b for a, b in zip(part, after[:len(part)], strict=True))
    assert len(whole) == 40
    again = standalone.build_snapshot([tmp_path / "config"])
    assert again.snapshot is not None and again.snapshot.version == result.snapshot.version


def test_a_small_configuration_is_not_previewed(tmp_path: Path) -> None:
    write(tmp_path / "config", 19)
    given: list[ir.SnapshotIR] = []
    assert standalone.build_snapshot([tmp_path / "config"], preview=given.append).snapshot
    assert not given


def test_a_configuration_with_an_invalid_resource_is_not_previewed(tmp_path: Path) -> None:
    broken = "---\n" + r.dump(r.route("bad", rules=[{"bogus": 1}]))
    write(tmp_path / "config", 40, extra=broken)
    given: list[ir.SnapshotIR] = []
    result = standalone.build_snapshot([tmp_path / "config"], preview=given.append)
    assert result.snapshot is not None and result.warnings  # contained, served without it
    assert not given


def test_warnings_of_a_part_or_of_the_whole_do_not_stop_the_previews(tmp_path: Path) -> None:
    """A Policy targeting the last Route (not in the first parts: Invalid there) and a rule
    forwarding to an Upstream that does not exist (a warning of every part and the whole):
    the parts are still given, the whole extends them and has a build's version."""
    policy = r.policy("late", [{"kind": "Route", "name": "r039"}],
                      **r.headers_policy(response={"set": {"x-late": "1"}}))
    missing = r.route("a-missing", rules=[r.rule({"exact": "/missing"},
                                                 forward=r.forward("absent"))])
    write(tmp_path / "config", 40, extra="---\n" + r.dump(policy, missing))
    given: list[ir.SnapshotIR] = []
    result = standalone.build_snapshot([tmp_path / "config"], preview=given.append)
    assert result.snapshot is not None and len(given) == 2
    assert any("absent" in warning for warning in result.warnings)
    assert not any("r039 not found" in warning for warning in result.warnings)
    whole = result.snapshot.gateways[0].rules
    for part in (snapshot.gateways[0].rules for snapshot in given):
        assert all(a is b for a, b in zip(part, whole[:len(part)], strict=True))
    late = next(rule for rule in whole if rule.route == "Route default/r039")
    assert late.policies  # the Policy attached in the whole
    again = standalone.build_snapshot([tmp_path / "config"])
    assert again.snapshot is not None and again.snapshot.version == result.snapshot.version


def test_routes_delegating_to_many_tables_are_previewed_by_route(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    folder.mkdir()
    docs = [r.gateway(8080)]
    for group in range(3):
        docs.append(r.route(f"d{group}", rules=[r.rule(
            {"prefix": f"/g{group}"}, delegate={"selector": {"matchLabels": {"g": f"{group}"}}})]))
        docs += [r.route_table(f"t{group}-{i}", labels={"g": f"{group}"}, rules=[r.rule(
            {"exact": f"/g{group}/t{i}"}, directResponse={"status": 200})]) for i in range(8)]
    (folder / "all.yaml").write_text(r.dump(*docs))
    given: list[ir.SnapshotIR] = []
    result = standalone.build_snapshot([folder], preview=given.append)
    assert result.snapshot is not None and not result.warnings and len(given) == 2
    first, second = (snapshot.gateways[0].rules for snapshot in given)
    whole = result.snapshot.gateways[0].rules
    # int(3 * 0.35) = 1 Route: the tables it delegates to; int(3 * 0.7) = 2 Routes
    assert {rule.route for rule in first} == {f"RouteTable default/t0-{i}" for i in range(8)}
    assert len(first) == 8 and len(second) == 16 and len(whole) == 24
    assert all(a is b for a, b in zip(second, whole[:16], strict=True))
    assert all(a is b for a, b in zip(first, second[:8], strict=True))


KUBE_GATEWAY = """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: propylon
  listeners: [{name: web, port: 8080, protocol: HTTP}]
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {name: echo, namespace: shop}
spec:
  endpoints: [{address: 127.0.0.1, port: 9000}]
"""


def http_route(i: int) -> str:
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r{i:03d}, namespace: shop}}
spec:
  parentRefs: [{{name: edge}}]
  rules:
    - matches: [{{path: {{type: PathPrefix, value: /r{i}}}}}]
      backendRefs: [{{name: echo, kind: Upstream, group: propylon.dev}}]
"""


def test_kubernetes_route_objects_are_previewed_by_object(tmp_path: Path) -> None:
    """HTTPRoutes are the parts' shares as Routes are: each part converts its own (the next
    one's conversion replays them), and the whole extends the parts."""
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "gateway.yaml").write_text(KUBE_GATEWAY)
    (folder / "routes.yaml").write_text("---\n".join(http_route(i)
                                                     for i in reversed(range(40))))
    given: list[ir.SnapshotIR] = []
    result = standalone.build_snapshot([folder], preview=given.append)
    assert result.snapshot is not None and not result.warnings and len(given) == 2
    parts = [snapshot.gateways[0].rules for snapshot in given]
    whole = result.snapshot.gateways[0].rules
    assert [len(part) for part in parts] == [14, 28] and len(whole) == 40
    for part, after in zip(parts, [parts[1], whole], strict=True):
        assert all(a is b for a, b in zip(part, after[:len(part)], strict=True))
    again = standalone.build_snapshot([folder])
    assert again.snapshot is not None and again.snapshot.version == result.snapshot.version


def test_a_preview_that_fails_changes_nothing_served(tmp_path: Path) -> None:
    write(tmp_path / "config", 40)

    def fail(snapshot: ir.SnapshotIR) -> None:
        raise OSError("the workers' pipes are closed")

    result = standalone.build_snapshot([tmp_path / "config"], preview=fail)
    assert result.snapshot is not None and not result.errors
    assert len(result.snapshot.gateways[0].rules) == 40
