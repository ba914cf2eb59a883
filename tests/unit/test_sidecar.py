from pathlib import Path

from propylon.sidecar import build_sidecar_snapshot
from tests.support.applied import applied


def test_sidecar_forwards_everything_to_the_local_app(tmp_path: Path) -> None:
    result = build_sidecar_snapshot(9001, "127.0.0.1", 8000, [])
    assert result.errors == [] and result.snapshot is not None
    (gateway,) = result.snapshot.gateways
    assert [(lis.address, lis.port) for lis in gateway.listeners] == [("127.0.0.1", 8000)]
    (upstream,) = gateway.upstreams
    assert [(e.address, e.port) for e in upstream.endpoints] == [("127.0.0.1", 9001)]


def policy_files(tmp_path: Path, inline: str, policy_name: str, policy_spec: str) -> list[Path]:
    """A --policy file of inline items, and one of a Policy resource targeting the app's
    Route."""
    items = tmp_path / "inline.yaml"
    items.write_text(inline)
    resources = tmp_path / "resources.yaml"
    resources.write_text(
        f"apiVersion: propylon.dev/v1\nkind: Policy\nmetadata: {{name: {policy_name}}}\n"
        f"spec:\n  targetRefs: [{{kind: Route, name: app}}]\n  {policy_spec}\n"
    )
    return [items, resources]


def test_policy_files_add_inline_items_and_resources(tmp_path: Path) -> None:
    files = policy_files(tmp_path, "- headers: {response: {set: {x-team: a}}}\n", "limits",
                         "requestLimits: {maxBodySize: 1024}")
    result = build_sidecar_snapshot(9001, "0.0.0.0", 8000, files)
    assert result.errors == [] and result.snapshot is not None
    (rule,) = result.snapshot.gateways[0].rules
    policies = applied(result.snapshot.gateways[0], rule)
    assert [p.type for p in policies] == ["requestLimits", "headers"]


def test_bad_policy_file_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- teleport: {}\n")
    result = build_sidecar_snapshot(9001, "0.0.0.0", 8000, [bad])
    assert result.snapshot is None
    assert any("teleport" in e for e in result.errors)


def test_policy_files_keep_yaml_1_1_scalars_as_written(tmp_path: Path) -> None:
    """``yes``, ``1.10`` and ``NO`` in a --policy file are the strings written (#15 item 5),
    in inline items as in resources."""
    files = policy_files(tmp_path, "- headers: {response: {set: {x-resp: yes, x-version: 1.10}}}\n",
                         "more", "headers: {request: {set: {x-flag: NO}}}")
    result = build_sidecar_snapshot(9001, "0.0.0.0", 8000, files)
    assert result.errors == [] and result.snapshot is not None
    gateway = result.snapshot.gateways[0]
    (rule,) = gateway.rules
    specs = [p.spec for p in (*gateway.default_policies, *rule.policies) if p.type == "headers"]
    assert {"x-resp": "yes", "x-version": "1.10"} in [s["response"]["set"] for s in specs]
    assert {"x-flag": "NO"} in [s["request"]["set"] for s in specs]


def test_a_policy_file_with_a_yaml_error_is_reported_at_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("- headers: {response: {set: {x-a: b}}}\n- [unclosed\n")
    result = build_sidecar_snapshot(9001, "0.0.0.0", 8000, [bad])
    assert result.snapshot is None
    assert any(e.startswith(f"{bad}:") and "invalid YAML" in e for e in result.errors), (
        result.errors)
