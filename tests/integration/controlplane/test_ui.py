"""The dashboard over HTTP against a real control plane: login and its cookie, the API refusing
the cookie, CSRF and Origin checks, escaping of what the store and proxies say, headers."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from tests.integration.controlplane.conftest import Cluster, ControlPlane
from tests.integration.controlplane.helpers import gateway, http, route, upstream, wait_until

SCRIPT = "<script>alert(1)</script>"
EVIL_PROXY = "<img src=x onerror=alert(2)>"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def call(plane: ControlPlane, method: str, path: str, form: dict[str, str] | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """One request, redirects not followed: (status, headers lower-case, body)."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(plane.url + path, data=data, method=method,
                                     headers={"content-type":
                                              "application/x-www-form-urlencoded",
                                              **(headers or {})})
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=10) as answer:
            status, head, body = answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as exc:
        status, head, body = exc.code, exc.headers, exc.read()
    return status, {k.lower(): v for k, v in head.items()}, body.decode()


def bad_route() -> dict[str, Any]:
    """A Route whose regex does not compile: Invalid, and its reason quotes the regex."""
    bad = route("bad", "shop", "/bad", "svc")
    bad["spec"]["rules"][0]["matches"] = [{"path": {"regex": f"/{SCRIPT}(("}}]
    return bad


@pytest.fixture(scope="module")
def plane(module_cluster: Cluster) -> ControlPlane:
    """One control plane for the module: no test changes what another one reads."""
    plane = module_cluster.control()
    for resource in (upstream("svc", "shop", 9), route("shop", "shop", "/", "svc"),
                     bad_route(), gateway("edge", "infra", 8080, ["shop"])):
        plane.must_put(resource)
    wait_until(lambda: plane.get("/v1/status")[1]["gateways"], what="the Gateway")
    status, _ = http("POST", plane.url + "/v1/gateways/infra/edge/reports",
                     {"proxy": EVIL_PROXY, "version": "v0", "result": "ACK"}, plane.token)
    assert status == 200
    return plane


def login(plane: ControlPlane) -> str:
    status, head, _ = call(plane, "POST", "/ui/login", {"token": plane.token},
                           {"origin": plane.url})
    assert status == 303 and head["location"] == "/ui/"
    return head["set-cookie"].split(";")[0]


def test_pages_need_the_login_cookie_and_it_is_httponly_and_strict(
        plane: ControlPlane) -> None:
    for path in ("/ui/", "/ui/resources", "/ui/live.json", "/ui/gateways/infra/edge"):
        status, head, _ = call(plane, "GET", path)
        assert (status, head["location"]) == (303, "/ui/login"), path
    assert call(plane, "GET", "/ui")[1]["location"] == "/ui/"
    status, _, body = call(plane, "POST", "/ui/login", {"token": "wrong"})
    assert status == 401 and "Wrong token." in body
    status, head, _ = call(plane, "POST", "/ui/login", {"token": plane.token},
                           {"origin": plane.url})
    attributes = [a.strip() for a in head["set-cookie"].split(";")]
    assert {"HttpOnly", "SameSite=Strict", "Path=/ui"} <= set(attributes)
    assert "Secure" not in attributes  # plain HTTP here; set over TLS
    cookie = attributes[0]
    assert call(plane, "GET", "/ui/", headers={"cookie": cookie})[0] == 200
    assert call(plane, "GET", "/v1/status", headers={"cookie": cookie})[0] == 401


def test_login_from_another_origin_is_refused(plane: ControlPlane) -> None:
    status, head, body = call(plane, "POST", "/ui/login", {"token": plane.token},
                              {"origin": "http://evil.example"})
    assert status == 403 and "set-cookie" not in head
    assert "http://evil.example" in body


@pytest.mark.parametrize(("form", "headers", "why"), [
    pytest.param({}, {}, "CSRF token is missing", id="no-csrf-field"),
    pytest.param({"csrf": "0" * 64}, {}, "CSRF token is missing or wrong", id="wrong-csrf"),
    pytest.param(None, {"origin": "http://evil.example"}, "came from http://evil.example",
                 id="other-origin"),
    pytest.param(None, {"referer": "http://evil.example/x"}, "another site",
                 id="other-referer"),
])
def test_posts_without_the_csrf_token_or_from_elsewhere_are_refused(
        plane: ControlPlane, form: dict[str, str] | None, headers: dict[str, str],
        why: str) -> None:
    cookie = login(plane)
    if form is None:  # the right token, the wrong origin
        page = call(plane, "GET", "/ui/gateways/infra/edge", headers={"cookie": cookie})[2]
        form = {"csrf": page.split('name="csrf" value="')[1].split('"')[0]}
    status, _, body = call(plane, "POST", "/ui/gateways/infra/edge/rollout/abort", form,
                           {"cookie": cookie, **headers})
    assert status == 403 and why in body, body


def test_a_post_with_the_token_from_the_page_is_done(plane: ControlPlane) -> None:
    cookie = login(plane)
    page = call(plane, "GET", "/ui/", headers={"cookie": cookie})[2]
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    status, head, _ = call(plane, "POST", "/ui/gateways/infra/edge/rollout/pause",
                           {"csrf": csrf}, {"cookie": cookie, "origin": plane.url})
    assert status == 303
    location = urllib.parse.unquote_plus(head["location"])
    assert location.startswith("/ui/gateways/infra/edge?message=Gateway infra/edge has no "
                               "rollout")
    status, head, _ = call(plane, "POST", "/ui/logout", {"csrf": csrf}, {"cookie": cookie})
    assert status == 303 and "Max-Age=0" in head["set-cookie"]


def test_what_the_store_and_proxies_say_is_escaped(plane: ControlPlane) -> None:
    cookie = login(plane)
    _, head, resources = call(plane, "GET", "/ui/resources", headers={"cookie": cookie})
    assert SCRIPT not in resources
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in resources
    assert resources.index("shop/bad") < resources.index("shop/shop")  # invalid first
    fleets = call(plane, "GET", "/ui/", headers={"cookie": cookie})[2]
    assert EVIL_PROXY not in fleets and "&lt;img src=x onerror=alert(2)&gt;" in fleets
    explained = call(plane, "GET", "/ui/explain?" + urllib.parse.urlencode(
        {"url": f"http://127.0.0.1:8080/{SCRIPT}", "headers": f"x-a: {SCRIPT}"}),
        headers={"cookie": cookie})[2]
    assert SCRIPT not in explained and "rule     route:shop/shop:0" in explained
    assert "script-src 'self'" in head["content-security-policy"]
    assert head["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in head["content-security-policy"]


def test_explain_reports_a_bad_form_as_a_message(plane: ControlPlane) -> None:
    cookie = login(plane)
    page = call(plane, "GET", "/ui/explain?" + urllib.parse.urlencode(
        {"url": "http://127.0.0.1:8080/", "headers": "no colon"}), headers={"cookie": cookie})
    assert page[0] == 200 and "header line 1 is not" in page[2]
    page = call(plane, "GET", "/ui/explain?" + urllib.parse.urlencode(
        {"url": "http://127.0.0.1:8080/", "gateway": "infra/none"}),
        headers={"cookie": cookie})
    assert "no Gateway infra/none" in page[2]


def test_a_large_route_table_comes_in_pages_and_filters(cluster: Cluster) -> None:
    plane = cluster.control()
    routes = [route(f"r{i:03}", "lots", f"/items/{i}", "svc") for i in range(250)]
    status, body = http("POST", plane.url + "/v1/apply", {"resources": [
        upstream("svc", "lots", 9), gateway("many", "lots", 8081, ["lots"]), *routes]},
        plane.token)
    assert status == 200, body
    cookie = login(plane)

    def page(query: str = "") -> str:
        status, _, body = call(plane, "GET", "/ui/gateways/lots/many" + query,
                               headers={"cookie": cookie})
        assert status == 200
        return body

    wait_until(lambda: "of 250" in page(), what="the 250 rules")
    first = page()
    table = first.split('<table class="routes">')[1].split("</table>")[0]
    assert "Rules 1-200 of 250" in first and table.count("<tr") == 201  # the header, 200
    assert "route:lots/r000:0" in first and "route:lots/r200:0" not in first
    assert 'rel="next" href="/ui/gateways/lots/many?q=&amp;from=200"' in first
    second = page("?from=200")
    assert "Rules 201-250 of 250" in second and "route:lots/r249:0" in second
    assert 'rel="prev"' in second and 'rel="next"' not in second
    found = page("?" + urllib.parse.urlencode({"q": "/ITEMS/24"}))
    assert "Rules 1-11 of 11" in found and "(250 in all)" in found  # 24, 240-249
    assert "route:lots/r024:0" in found and "route:lots/r023:0" not in found
    escaped = page("?" + urllib.parse.urlencode({"q": SCRIPT}))
    assert "No rules" in escaped and SCRIPT not in escaped
