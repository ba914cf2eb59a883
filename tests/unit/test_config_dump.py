"""The admin listener's ``/config`` (``admin/config_dump.py``): written a rule and a status at a
time, it is the text of the whole snapshot as plain data, secrets redacted, compact JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from propylon import ir
from propylon.admin.config_dump import _HOLE, _written_in_pieces, config_document
from propylon.admin.redact import REDACTED, redact
from propylon.ir.jsontext import json_list, json_sorted
from propylon.standalone import build_snapshot
from tests.support import resources as r

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

def _whole(snapshot: ir.SnapshotIR) -> bytes:
    return (json_sorted(redact(ir.to_data(snapshot))) + "\n").encode()


def _snapshot(tmp_path: Path, body: str = "unavailable") -> ir.SnapshotIR:
    (tmp_path / "acme.key").write_text("key-of-acme-0123")
    (tmp_path / "alice.password").write_text("password-of-alice")
    (tmp_path / "gw.yaml").write_text(r.dump(
        r.gateway(8080, invalidRouteResponse={"status": 503, "body": body}),
        r.consumer("acme", {"apiKeys": [{"secretRef": {"file": "acme.key"}}],
                            "basicAuth": [{"username": "alice",
                                           "secretRef": {"file": "alice.password"}}]}),
        r.route("api", rules=[
            r.rule({"prefix": "/a"}, policies=[{"apiKey": {}}],
                   directResponse={"status": 200, "body": "ok"}),
            r.rule({"prefix": "/b"}, forward=r.forward("missing"))])))
    built = build_snapshot([tmp_path])
    assert built.snapshot is not None, built.errors
    return built.snapshot


def test_the_document_is_the_whole_snapshot_redacted(tmp_path) -> None:
    snapshot = _snapshot(tmp_path)
    document = config_document(snapshot)
    assert document == _whole(snapshot)
    assert b"key-of-acme" not in document and b"password-of-alice" not in document
    assert REDACTED.encode() in document and b"\n" not in document[:-1]  # compact
    data = json.loads(document)
    assert data["version"] == snapshot.version
    assert [len(g["rules"]) for g in data["gateways"]] == [2]
    assert any(s["state"] == "Invalid" for s in data["statuses"])  # the missing Upstream


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()))
def test_every_example_is_written_as_the_whole(example) -> None:
    built = build_snapshot([EXAMPLES / example])
    if built.snapshot is None:
        pytest.skip(f"{example} is not built from its folder alone: {built.errors}")
    assert config_document(built.snapshot) == _whole(built.snapshot)


def test_a_value_that_is_the_hole_is_written_whole(tmp_path) -> None:
    snapshot = _snapshot(tmp_path, body=_HOLE)
    assert _written_in_pieces(snapshot) is None
    document = config_document(snapshot)
    assert document == _whole(snapshot)
    assert json.loads(document)["gateways"][0]["invalid_route_response"]["body"] == _HOLE


def test_no_snapshot_is_null() -> None:
    assert config_document(None) == b"null\n"


@pytest.mark.parametrize("count", [0, 1, 99, 100, 101, 250])
def test_a_list_written_in_batches_is_the_list(count) -> None:
    items = [{"n": n, "name": f"item-{n}"} for n in range(count)]
    assert json_list(items, json_sorted) == json_sorted(items)
