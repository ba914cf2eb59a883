"""Gateway API and Ingress objects served by a real gateway (``propylon run``) to real
upstreams: scenarios ported from the Gateway API conformance suite (HTTPRoute matching,
weights, header modifiers, redirects, rewrites, mirrors, ReferenceGrant, invalid
backendRefs, hostname intersection), a Service + EndpointSlice backend and an Ingress."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.client import roundtrip
from tests.support.gateway import REPO, Gateway
from tests.support.net import free_port
from tests.support.upstream import ScriptedUpstream

INGRESS_PORT = free_port()  # the Ingress Gateway's listener (a second Gateway)
SELECTOR_PORT = free_port()  # a Gateway admitting routes of namespaces chosen by labels

INFRA = "gateway-conformance-infra"
WEB = "gateway-conformance-web-backend"


def config(port: int, ups: dict[str, ScriptedUpstream]) -> str:
    upstreams = "".join(f"""
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {{name: infra-backend-{name}, namespace: {INFRA}}}
spec: {{endpoints: [{{address: 127.0.0.1, port: {ups[name].port}}}]}}
""" for name in ("v1", "v2", "v3"))
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: same-namespace, namespace: {INFRA}}}
spec:
  gatewayClassName: propylon
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
    - name: http
      port: {port}
      protocol: HTTP
      allowedRoutes: {{namespaces: {{from: Same}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: by-labels, namespace: {INFRA}}}
spec:
  gatewayClassName: propylon
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
    - name: http
      port: {SELECTOR_PORT}
      protocol: HTTP
      allowedRoutes:
        namespaces:
          from: Selector
          selector: {{matchLabels: {{gateway-access: granted}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {WEB}, labels: {{gateway-access: granted}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {INFRA}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: labelled-namespace, namespace: {WEB}}}
spec:
  parentRefs: [{{name: by-labels, namespace: {INFRA}}}]
  hostnames: [selected.test]
  rules:
  - backendRefs: [{{name: web-backend, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: unlabelled-namespace, namespace: {INFRA}}}
spec:
  parentRefs: [{{name: by-labels}}]
  hostnames: [not-selected.test]
  rules:
  - backendRefs: [{{name: infra-backend-v1, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: other-class, namespace: {INFRA}}}
spec:
  gatewayClassName: not-propylon
  listeners: [{{name: http, port: 1, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: matching, namespace: {INFRA}}}
spec:
  parentRefs: [{{name: same-namespace}}]
  hostnames: [matching.test]
  rules:
  - matches:
    - path: {{type: PathPrefix, value: /}}
    - headers: [{{name: version, value: one}}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches:
    - path: {{type: PathPrefix, value: /v2}}
    - headers: [{{name: version, value: two}}]
    backendRefs: [{{name: infra-backend-v2, port: 8080}}]
  - matches:
    - path: {{type: Exact, value: /exact}}
      method: POST
    - queryParams: [{{name: animal, value: whale}}]
    - path: {{type: RegularExpression, value: "/re/[0-9]+"}}
    backendRefs: [{{name: infra-backend-v3, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: weighted-backends, namespace: {INFRA}}}
spec:
  parentRefs: [{{name: same-namespace}}]
  hostnames: [weights.test]
  rules:
  - backendRefs:
    - {{name: infra-backend-v1, port: 8080, weight: 70}}
    - {{name: infra-backend-v2, port: 8080, weight: 30}}
    - {{name: infra-backend-v3, port: 8080, weight: 0}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: weighted-with-invalid, namespace: {INFRA}}}
spec:
  parentRefs: [{{name: same-namespace}}]
  hostnames: [partly-invalid.test]
  rules:
  - backendRefs:
    - {{name: infra-backend-v1, port: 8080, weight: 3}}
    - {{name: does-not-exist, port: 8080, weight: 1}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: filters, namespace: {INFRA}}}
spec:
  parentRefs: [{{name: same-namespace}}]
  hostnames: [filters.test]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /headers}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{{name: X-Header-Set, value: set-overwrites-values}}]
        add: [{{name: X-Header-Add, value: header-val-1}}]
        remove: [X-Header-Remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{{name: X-Response-Set, value: set}}]
        remove: [X-Upstream-Secret]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /full}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        hostname: example.org
        path: {{type: ReplaceFullPath, replaceFullPath: /full-path-replacement}}
        statusCode: 301
  - matches: [{{path: {{type: PathPrefix, value: /original-prefix}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        path: {{type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}
  - matches: [{{path: {{type: PathPrefix, value: /path-and-host}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        hostname: example.org
        path: {{type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}
  - matches: [{{path: {{type: PathPrefix, value: /strip-redirect/}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        statusCode: 308
        path: {{type: ReplacePrefixMatch, replacePrefixMatch: /}}
  - matches: [{{path: {{type: Exact, value: /exact-redirect}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        path: {{type: ReplacePrefixMatch, replacePrefixMatch: /x}}
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /prefix/one}}}}]
    filters:
    - type: URLRewrite
      urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /one}}}}
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /strip-prefix}}}}]
    filters:
    - type: URLRewrite
      urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /}}}}
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /full-rewrite}}}}]
    filters:
    - type: URLRewrite
      urlRewrite: {{path: {{type: ReplaceFullPath, replaceFullPath: /test}}}}
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /mirror}}}}]
    filters:
    - type: RequestMirror
      requestMirror: {{backendRef: {{name: infra-backend-v2, port: 8080}}}}
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /missing}}}}]
    backendRefs: [{{name: does-not-exist, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /no-backends}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: reference-grant, namespace: {INFRA}}}
spec:
  parentRefs: [{{name: same-namespace}}]
  hostnames: [grant.test]
  rules:
  - backendRefs: [{{name: web-backend, namespace: {WEB}, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: no-grant, namespace: {INFRA}}}
spec:
  parentRefs: [{{name: same-namespace}}]
  hostnames: [nogrant.test]
  rules:
  - backendRefs: [{{name: web-backend2, namespace: {WEB}, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: reference-grant, namespace: {WEB}}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {INFRA}}}]
  to: [{{group: "", kind: Service, name: web-backend}}]
---
apiVersion: v1
kind: Service
metadata:
  name: web-backend
  namespace: {WEB}
  uid: 1234
  creationTimestamp: "2024-01-01T00:00:00Z"
spec:
  type: ClusterIP
  clusterIP: 10.96.0.10
  ports: [{{name: http, port: 8080, protocol: TCP, targetPort: 3000}}]
status: {{loadBalancer: {{}}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-backend-x7k2p
  namespace: {WEB}
  labels: {{kubernetes.io/service-name: web-backend}}
addressType: IPv4
ports: [{{name: http, port: {ups['web'].port}, protocol: TCP}}]
endpoints:
  - addresses: [127.0.0.1]
    conditions: {{ready: true}}
  - addresses: [10.0.0.99]
    conditions: {{ready: false}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: wrong-namespace, namespace: {WEB}}}
spec:
  parentRefs: [{{name: same-namespace, namespace: {INFRA}}}]
  hostnames: [wrongns.test]
  rules:
  - backendRefs: [{{name: web-backend, port: 8080}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: shop, namespace: {INFRA}}}
spec:
  ingressClassName: propylon
  defaultBackend:
    service: {{name: infra-backend-v3, port: {{number: 8080}}}}
  rules:
  - host: ingress.test
    http:
      paths:
      - path: /exact
        pathType: Exact
        backend: {{service: {{name: infra-backend-v2, port: {{number: 8080}}}}}}
      - path: /
        pathType: Prefix
        backend: {{service: {{name: infra-backend-v1, port: {{number: 8080}}}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: other
  namespace: {INFRA}
  annotations: {{kubernetes.io/ingress.class: nginx}}
spec:
  rules:
  - host: other-ingress.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {{service: {{name: infra-backend-v2, port: {{number: 8080}}}}}}
---
apiVersion: propylon.dev/v1
kind: Gateway
metadata: {{name: ingress, namespace: {INFRA}}}
spec:
  listeners: [{{name: http, port: {INGRESS_PORT}, address: 127.0.0.1}}]
  routeSelector:
    namespaces: ["*"]
    matchLabels: {{propylon.dev/ingress-class: propylon}}
""" + upstreams


@pytest.fixture(scope="module")
def ups(module_upstreams) -> dict[str, ScriptedUpstream]:
    return {name: module_upstreams(name) for name in ("v1", "v2", "v3", "web")}


@pytest.fixture(scope="module")
def gw(module_gateways, ups) -> Gateway:
    return module_gateways(lambda port: config(port, ups))


@pytest.fixture(autouse=True)
def _reset(ups) -> None:
    for upstream in ups.values():
        upstream.reset()


def served(gw: Gateway, host: str, target: str = "/", method: str = "GET",
           headers: dict[str, str] | None = None, port: int | None = None):
    return roundtrip(port or gw.port, method, target, {"host": host, **(headers or {})})


@pytest.mark.parametrize(
    ("target", "method", "headers", "expected"),
    [
        pytest.param("/", "GET", {}, "v1", id="prefix-root"),
        pytest.param("/example", "GET", {}, "v1", id="prefix-any"),
        pytest.param("/", "GET", {"version": "one"}, "v1", id="header-one"),
        pytest.param("/v2", "GET", {}, "v2", id="prefix-v2"),
        pytest.param("/v2/example", "GET", {}, "v2", id="prefix-v2-deeper"),
        pytest.param("/", "GET", {"version": "two"}, "v2", id="header-two"),
        pytest.param("/v2x", "GET", {}, "v1", id="prefix-is-segment-wise"),
        pytest.param("/exact", "POST", {}, "v3", id="exact-and-method"),
        pytest.param("/exact", "GET", {}, "v1", id="exact-wrong-method"),
        pytest.param("/?animal=whale", "GET", {}, "v3", id="query"),
        pytest.param("/re/42", "GET", {}, "v3", id="regex"),
    ],
)
def test_matching(gw, target, method, headers, expected) -> None:
    response = served(gw, "matching.test", target, method, headers)
    assert response.status == 200, response
    assert response.header("x-upstream") == expected


def test_weights_split_traffic_and_weight_zero_gets_none(gw) -> None:
    seen = collections.Counter(
        served(gw, "weights.test").header("x-upstream") for _ in range(200))
    assert seen["v3"] == 0
    assert 110 <= seen["v1"] <= 170 and seen["v1"] + seen["v2"] == 200, seen


def test_an_unresolved_weighted_backend_fails_only_its_share(gw) -> None:
    # the Gateway API: requests that would have gone to an invalid backendRef get a 500, the
    # others are served (the split is exact: weights are smooth, not random)
    seen = collections.Counter()
    for _ in range(200):
        response = served(gw, "partly-invalid.test")
        seen[response.header("x-upstream") if response.status == 200 else response.status] += 1
    assert seen == {"v1": 150, 500: 50}, seen


def test_request_and_response_header_modifiers(gw, ups) -> None:
    ups["v1"].reset(lambda request: _reply_with(request, ("x-upstream-secret", "s")))
    response = served(gw, "filters.test", "/headers", headers={
        "x-header-set": "original", "x-header-add": "existing", "x-header-remove": "gone"})
    assert response.status == 200
    request = ups["v1"].last
    assert request.head.get_all("x-header-set") == ["set-overwrites-values"]
    assert request.head.get_all("x-header-add") == ["existing", "header-val-1"]
    assert request.header("x-header-remove") is None
    assert response.header("x-response-set") == "set"
    assert response.header("x-upstream-secret") is None


def _reply_with(request, header: tuple[str, str]):
    from tests.support.upstream import Reply

    return Reply(200, [header], b"ok")


def test_redirect_full_path_with_hostname_and_status(gw) -> None:
    response = served(gw, "filters.test", "/full/x")
    assert response.status == 301
    assert response.header("location").endswith("example.org/full-path-replacement")


@pytest.mark.parametrize(
    ("target", "status", "location"),
    [
        pytest.param("/original-prefix/lemon", 302,
                     "http://filters.test/replacement-prefix/lemon", id="replace-prefix"),
        pytest.param("/original-prefix", 302, "http://filters.test/replacement-prefix",
                     id="the-prefix-itself"),
        pytest.param("/original-prefix/a?b=c", 302,
                     "http://filters.test/replacement-prefix/a?b=c", id="query-kept"),
        pytest.param("/path-and-host/x", 302, "http://example.org/replacement-prefix/x",
                     id="with-hostname"),
        pytest.param("/strip-redirect/y/z", 308, "http://filters.test/y/z", id="to-root"),
    ],
)
def test_redirect_replace_prefix_match(gw, target, status, location) -> None:
    response = served(gw, "filters.test", target)
    assert response.status == status, response
    assert response.header("location") == location


def test_redirect_replace_prefix_match_needs_path_prefix_matches(gw) -> None:
    # the Gateway API: ReplacePrefixMatch with an Exact match is invalid: that rule answers 500
    assert served(gw, "filters.test", "/exact-redirect").status == 500


@pytest.mark.parametrize(
    ("target", "upstream_target"),
    [
        pytest.param("/prefix/one/two", "/one/two", id="replace-prefix"),
        pytest.param("/strip-prefix/three", "/three", id="strip-prefix"),
        pytest.param("/full-rewrite/four", "/test", id="full-path"),
    ],
)
def test_url_rewrite(gw, ups, target, upstream_target) -> None:
    assert served(gw, "filters.test", target).status == 200
    assert ups["v1"].last.target == upstream_target


def test_request_mirror(gw, ups) -> None:
    assert served(gw, "filters.test", "/mirror/x").header("x-upstream") == "v1"
    mirrored = ups["v2"].wait_for_requests(1)
    assert mirrored[0].path == "/mirror/x"


@pytest.mark.parametrize(
    ("host", "target"),
    [
        pytest.param("filters.test", "/missing", id="nonexistent-backend"),
        pytest.param("filters.test", "/no-backends", id="no-backendRefs"),
        pytest.param("nogrant.test", "/", id="cross-namespace-without-grant"),
    ],
)
def test_invalid_backend_refs_answer_500(gw, host, target) -> None:
    assert served(gw, host, target).status == 500


def test_reference_grant_and_endpoint_slice_backend(gw, ups) -> None:
    response = served(gw, "grant.test", "/x")
    assert response.header("x-upstream") == "web"


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("wrongns.test", id="namespace-not-allowed-by-listener"),
        pytest.param("unknown.test", id="no-route-for-host"),
    ],
)
def test_unattached_routes_are_not_served(gw, host) -> None:
    assert served(gw, host).status == 404


@pytest.mark.parametrize(
    ("host", "target", "expected"),
    [
        pytest.param("ingress.test", "/exact", "v2", id="exact"),
        pytest.param("ingress.test", "/exact/more", "v1", id="prefix"),
        pytest.param("elsewhere.test", "/x", "v3", id="default-backend"),
    ],
)
def test_ingress(gw, host, target, expected) -> None:
    response = served(gw, host, target, port=INGRESS_PORT)
    assert response.header("x-upstream") == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("selected.test", "web", id="namespace-with-the-label"),
        pytest.param("not-selected.test", None, id="namespace-without-it"),
    ],
)
def test_allowed_routes_namespace_selector(gw, host, expected) -> None:
    response = served(gw, host, port=SELECTOR_PORT)
    if expected is None:
        assert response.status == 404
    else:
        assert response.header("x-upstream") == expected


def test_ingress_of_another_class_is_left_alone(gw) -> None:
    assert served(gw, "other-ingress.test", port=INGRESS_PORT).header("x-upstream") == "v3"


def test_validate_shows_gateway_api_conditions(gw) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "propylon", "validate", "-o", "json", str(gw.config_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    problems = json.loads(result.stdout)["problems"]
    messages = [p["message"] for p in problems]
    assert any("ResolvedRefs=False BackendNotFound" in m and "does-not-exist" in m
               for m in messages), messages
    assert any("ResolvedRefs=False RefNotPermitted" in m for m in messages), messages
    assert any("Accepted=False NotAllowedByListeners" in m for m in messages), messages
    assert any("PartiallyInvalid=True UnsupportedValue" in m for m in messages), messages
    located = next(p for p in problems if "does-not-exist" in p["message"])
    text = (Path(gw.config_dir) / "gateway.yaml").read_text().splitlines()
    assert "does-not-exist" in text[located["line"] - 1]


def test_statuses_in_the_admin_config_are_gateway_api_conditions(gw) -> None:
    status, body = gw.admin_get("/config")
    assert status == 200
    statuses = {f"{s['kind']} {s['key']}": s for s in json.loads(body)["statuses"]}
    gateway = statuses[f"Gateway {INFRA}/same-namespace"]
    assert "Accepted=True Accepted" in gateway["reasons"]
    assert "Programmed=True Programmed" in gateway["reasons"]
    route = statuses[f"HTTPRoute {INFRA}/matching"]
    assert route["state"] == "Accepted"
    assert f"parent Gateway {INFRA}/same-namespace: Accepted=True Accepted" in route["reasons"]
    assert f"Route {INFRA}/matching" not in statuses
