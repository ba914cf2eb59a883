"""The dashboard in headless Chromium (Playwright driving Debian's /usr/bin/chromium): log in,
see a fleet of real proxies, find an invalid route and its reason, run an explain, and watch a
rollout advance on the fleets page without reloading it. Screenshots go to the test's tmp
directory; their paths are printed."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.controlplane.conftest import Cluster
from tests.integration.controlplane.helpers import free_port, gateway, upstream, wait_until
from tests.integration.controlplane.test_rollout import (
    KEY,
    Traffic,
    _fleet,
    _on,
    _route,
    _start_proxy,
)
from tests.integration.controlplane.test_ui import SCRIPT, bad_route

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                                reason="Debian's chromium is not installed")


@pytest.fixture
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def test_operator_session(cluster: Cluster, browser: object, tmp_path: Path) -> None:
    plane = cluster.control()
    port = free_port()
    plane.must_put(upstream("svc", "shop", cluster.echo("svc")))
    plane.must_put(_route())
    plane.must_put(bad_route())
    edge = gateway("edge", "infra", port, ["shop"])
    edge["spec"]["rollout"] = {"steps": [50, 100], "interval": "3s", "maxErrorRatio": 0.05,
                               "minRequests": 20}
    plane.must_put(edge)
    stable = wait_until(lambda: _fleet(plane.get("/v1/status")[1])["version"],
                        what="the Gateway to be translated")
    proxies = [_start_proxy(cluster, plane, i) for i in range(2)]  # waited for after login

    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    dialogs: list[str] = []

    def dismiss(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    shots: list[Path] = []

    def shot(name: str) -> None:
        path = tmp_path / f"{len(shots) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)

    # log in
    page.goto(plane.url + "/ui/")
    assert page.url.endswith("/ui/login")
    page.fill("input[name=token]", "not the token")
    page.click("button[type=submit]")
    assert page.locator(".message").inner_text() == "Wrong token."
    page.fill("input[name=token]", plane.token)
    shot("login")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/ui/$"))
    cookie = next(c for c in page.context.cookies() if c["name"] == "propylon_token")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # not readable by scripts

    # see the fleet
    wait_until(lambda: _on(plane, stable) == set(proxies), timeout=30, what="two proxies")
    page.reload()
    section = page.locator(f"section[data-gateway='{KEY}']")
    for proxy in proxies:
        row = section.locator(f"tr[data-proxy='{proxy}']")
        assert row.locator("[data-live=state]").inner_text() == "ACK"
        assert row.locator("[data-live=version]").inner_text() == stable
    shot("fleet")

    # find the invalid route and its reason
    page.click("nav >> text=Resources")
    first = page.locator("table.resources tbody tr").first
    assert first.get_attribute("data-resource") == "Route shop/bad"
    assert "invalid regex" in first.locator(".reason").inner_text()
    assert SCRIPT in first.locator(".reason").inner_text()  # shown as text, never run
    shot("resources")

    # the route table, then explain from the form
    page.goto(plane.url + f"/ui/gateways/{KEY}")
    assert page.locator("table.routes").get_by_text("direct response").count() == 0
    assert page.locator("table.routes").get_by_text("path prefix /flaky").count() == 1
    shot("route-table")
    page.click("nav >> text=Explain")
    page.select_option("select[name=gateway]", KEY)
    page.fill("input[name=url]", f"http://127.0.0.1:{port}/flaky/items")
    page.fill("textarea[name=headers]", "x-canary: 1")
    page.click("form.explain button[type=submit]")
    explanation = page.locator("pre.explanation").inner_text()
    assert "rule     route:shop/shop:0 (Route shop/shop, rule 0)" in explanation
    assert "forward to upstream shop/svc" in explanation
    shot("explain")

    # watch a rollout advance, live, on the fleets page
    page.click("nav >> text=Fleets")
    rollout = section.locator("[data-live=rollout]")
    rate = section.locator("[data-live=rate]")
    seen: list[str] = []

    def shows(pattern: str) -> bool:
        text = rollout.inner_text()
        if not seen or seen[-1] != text:
            seen.append(text)
        return re.search(pattern, text) is not None

    with Traffic(port, threads=2):
        plane.must_put(_route(tag="2"))
        wait_until(lambda: shows(r"^Progressing, step 1/2 \(50%\), 1/2 proxies"), timeout=20,
                   interval=0.2, what="step 1 on the page")
        shot("rollout-step-1")
        wait_until(lambda: shows(r"^Complete, step 2/2 \(100%\), 2/2 proxies"), timeout=40,
                   interval=0.2, what="the rollout complete on the page")
        wait_until(lambda: re.match(r"[1-9][0-9.]* req/s", rate.inner_text()), timeout=20,
                   interval=0.2, what="a request rate")
        candidate = _fleet(plane.get("/v1/status")[1])["rollout"]["candidate"]
        assert section.locator("[data-live=desired]").inner_text() == candidate
        cells = section.locator("tr[data-proxy] [data-live=version]")
        wait_until(lambda: cells.all_inner_texts() == [candidate] * len(proxies),
                   what="both proxies on the candidate, on the page")
        shot("rollout-complete")
    assert page.url.endswith("/ui/")  # no reload: the poll wrote it
    print("\nrollout as the page showed it:", *seen, sep="\n  ")
    print("screenshots:", *shots, sep="\n  ")
    assert dialogs == []
