"""The loopback fallback of the namespace-based tests (tests/support/netns.py), forced with
``PROPYLON_E2E_NETNS=off``: the simple-ingress pattern (the cheapest of them) still passes, the
fallback is announced, and the check that needs namespaces (services unreachable from the
consumer) is reported as not run instead of passing silently.

The whole suite can run that way too: ``PROPYLON_E2E_NETNS=off pytest tests/e2e``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_simple_ingress import check_simple_ingress
from tests.support import netns
from tests.support.e2e import Procs
from tests.support.netns import ENV, networks


def test_simple_ingress_on_forced_loopback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(ENV, "off")
    with networks("f") as nets:
        procs = Procs(tmp_path)
        try:
            check_simple_ingress(nets, procs, tmp_path)
        finally:
            procs.stop_all()
    out = capsys.readouterr().out
    with capsys.disabled():
        print(out, end="")  # shown with -s, as for the other tests
    assert not nets.isolated and nets.namespaces == []
    assert {nets.consumer_ip, nets.gateway_front_ip, nets.services_ip} == {"127.0.0.1"}
    assert f"turned off by {ENV}=off: FALLING BACK TO LOOPBACK" in out
    assert nets.skipped == ["services unreachable from the consumer except through the gateway"]
    assert ("loopback fallback: services unreachable from the consumer except through the "
            "gateway NOT checked") in out


def test_namespaces_mode_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "loopback")
    with pytest.raises(ValueError, match=ENV), networks("v"):
        pass


def test_unavailable_namespaces_fall_back_unless_required(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def fail(tag: str) -> netns.Networks:
        raise PermissionError("ip netns add: Operation not permitted")
    monkeypatch.setattr(netns, "create", fail)
    monkeypatch.setenv(ENV, "auto")
    with networks("u") as nets:
        assert not nets.isolated
    assert "namespaces unavailable (PermissionError(" in capsys.readouterr().out
    monkeypatch.setenv(ENV, "on")
    with pytest.raises(RuntimeError, match=f"required by {ENV}=on"), networks("u"):
        pass
