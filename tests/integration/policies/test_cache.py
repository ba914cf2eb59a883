"""The ``cache`` policy (RFC 9111 shared cache) through a real gateway process, a scripted
upstream that counts what reaches it, the admin listener and a real Redis: one test per rule
of the issue (what is stored, the key and its variants, HEAD from GET, clients' conditionals,
revalidation with ETag and Last-Modified, stale-while-revalidate, stale-if-error, collapsed
misses, LRU by bytes, Redis shared by two proxies, Age and x-propylon-cache, purges by prefix
and tag, hits never reaching the policies after ``cache``)."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.policies._helpers import RedisServer
from tests.support import resources as r
from tests.support.client import roundtrip
from tests.support.gateway import Gateway
from tests.support.h1 import Response
from tests.support.net import poll_until
from tests.support.slow_body import SlowBodyUpstream
from tests.support.upstream import RecordedRequest, Reply, ScriptedUpstream

HOST = "cache.test"
LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"


class Origin:
    """What the upstream answers per path (cache headers from the test), with a version
    counter in the body so a fresh answer can be told from a cached one."""

    def __init__(self, upstream: ScriptedUpstream) -> None:
        self.upstream = upstream
        self.headers: dict[str, list[tuple[str, str]]] = {}
        self.status: dict[str, int] = {}
        self.delay = 0.0
        self.served = 0
        self.lock = threading.Lock()
        upstream.reset(self.reply)

    def set(self, path: str, *headers: tuple[str, str], status: int = 200) -> None:
        self.headers[path] = list(headers)
        self.status[path] = status

    def reply(self, request: RecordedRequest) -> Reply:
        path = request.path
        headers = self.headers.get(path, [("cache-control", "public, max-age=60")])
        etag = next((v for n, v in headers if n == "etag"), None)
        inm = request.header("if-none-match")
        if inm is not None and etag is not None and inm.replace("W/", "") == etag:
            return Reply(304, headers, framing="none", delay=self.delay)
        ims = request.header("if-modified-since")
        if ims is not None and any(n == "last-modified" for n, _ in headers) and etag is None:
            return Reply(304, headers, framing="none", delay=self.delay)
        with self.lock:
            self.served += 1
            version = self.served
        body = json.dumps({"path": request.target, "version": version,
                           "lang": request.header("x-lang")}).encode()
        return Reply(self.status.get(path, 200), [("content-type", "application/json"),
                                                   *headers], body, delay=self.delay)

    def count(self, path: str) -> int:
        return sum(1 for req in self.upstream.requests if req.path == path)


@pytest.fixture(scope="module")
def shared_upstream(module_upstreams) -> ScriptedUpstream:
    return module_upstreams("origin")


ORIGIN = "https://app.test"
# every policy that adds response fields after the cache's place in the chain
CHAIN = {"cors": {"allowOrigins": [ORIGIN]},
         "rateLimit": {"limits": [{"requests": 1000, "per": "1m"}], "responseHeaders": True},
         "headers": {"response": {"set": {"x-set": "one"}, "add": {"x-added": "two"}}},
         "cache": {"maxBytes": "200KiB"},
         "compression": {"minBytes": 10}}


@pytest.fixture(scope="module")
def slow_upstream() -> Any:
    """Bodies of 4 pieces of 100 bytes, 0.3 s apart: a head at once, an end about 1.2 s later."""
    up = SlowBodyUpstream("slow", piece_size=100, piece_gap=0.3).start()
    yield up
    up.stop()


def cache_routes(extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    cache = {"cache": {"maxBytes": "200KiB", "keyHeaders": ["x-tenant"], **(extra or {})}}
    return [
        r.rule({"prefix": "/chain/"}, forward=r.forward("up"), policies=[CHAIN]),
        r.rule({"prefix": "/slow/"}, forward=r.forward("slow"), policies=[
            {"cache": {"maxBytes": "200KiB", "maxEntryBytes": 150}}]),
        r.rule({"prefix": "/slow-vary/"}, forward=r.forward("slow"), policies=[
            {"cache": {"maxBytes": "200KiB"}}]),
        r.rule({"prefix": "/two/"}, forward=r.forward("up"), policies=[
            {"cache": {"maxBytes": "200KiB", "keyHeaders": ["x-tenant", "x-region"]}}]),
        r.rule({"prefix": "/ttl/"}, forward=r.forward("up"),
               policies=[{"cache": {"defaultTtl": "60s"}}]),
        r.rule({"prefix": "/fault/"}, forward=r.forward("up"), policies=[
            {**cache, "faultInjection": {"delay": {"fixed": "400ms"}}}]),
        r.rule({"prefix": "/"}, forward=r.forward("up"), policies=[cache]),
    ]


@pytest.fixture(scope="module")
def gw(module_gateways, shared_upstream: ScriptedUpstream, slow_upstream: Any) -> Gateway:
    return module_gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("cached", hostnames=[HOST], rules=cache_routes()),
        r.upstream("up", shared_upstream.port),
        r.upstream("slow", slow_upstream.port),
    ))


@pytest.fixture
def origin(shared_upstream: ScriptedUpstream, gw: Gateway) -> Origin:
    purge(gw, prefix=HOST)
    return Origin(shared_upstream)


def get(gw: Gateway, path: str, method: str = "GET", **headers: str) -> Response:
    fields = {k.replace("_", "-"): v for k, v in headers.items()}
    return roundtrip(gw.port, method, path, fields, host=HOST)


def cache_of(response: Response) -> str | None:
    return response.header("x-propylon-cache")


def version(response: Response) -> int:
    return int(json.loads(response.body)["version"])


def purge(gw: Gateway, **rule: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{gw.admin_port}/cache/purge", data=json.dumps(rule).encode(),
        method="POST", headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


# -- what is stored --------------------------------------------------------------------------
@pytest.mark.parametrize(("headers", "request_headers", "stored"), [
    pytest.param([("cache-control", "public, max-age=60")], {}, True, id="max-age"),
    pytest.param([("cache-control", "s-maxage=60, max-age=0")], {}, True, id="s-maxage"),
    pytest.param([("expires", "Thu, 01 Jan 2099 00:00:00 GMT")], {}, True, id="expires"),
    pytest.param([("cache-control", "no-store, max-age=60")], {}, False, id="no-store"),
    pytest.param([("cache-control", "private, max-age=60")], {}, False, id="private"),
    pytest.param([("cache-control", "max-age=60"), ("set-cookie", "a=1")], {}, False,
                 id="set-cookie"),
    pytest.param([("cache-control", "max-age=60"), ("vary", "*")], {}, False, id="vary-star"),
    pytest.param([], {}, False, id="no-freshness"),
    pytest.param([("cache-control", "max-age=60")], {"authorization": "Bearer x"}, False,
                 id="authorization"),
    pytest.param([("cache-control", "public, max-age=60")], {"authorization": "Bearer x"},
                 True, id="authorization-public"),
    pytest.param([("cache-control", "max-age=60")], {"cache-control": "no-store"}, False,
                 id="request-no-store"),
])
def test_only_what_the_answer_allows_is_stored(gw: Gateway, origin: Origin,
                                               headers: list[tuple[str, str]],
                                               request_headers: dict[str, str],
                                               stored: bool) -> None:
    origin.set("/rule", *headers)
    first = get(gw, "/rule", **request_headers)
    second = get(gw, "/rule", **request_headers)
    assert first.status == second.status == 200
    expected_first = "bypass" if "cache-control" in request_headers else "miss"
    assert cache_of(first) == expected_first
    if stored:
        assert cache_of(second) == "hit" and second.body == first.body
        assert origin.count("/rule") == 1
    else:
        assert cache_of(second) == expected_first and version(second) > version(first)
        assert origin.count("/rule") == 2


def test_default_ttl_for_answers_that_give_no_freshness(gw: Gateway, origin: Origin) -> None:
    origin.set("/ttl/a")
    assert cache_of(get(gw, "/ttl/a")) == "miss"
    assert cache_of(get(gw, "/ttl/a")) == "hit"


def test_other_methods_bypass(gw: Gateway, origin: Origin) -> None:
    response = roundtrip(gw.port, "POST", "/post", {}, b"{}", host=HOST)
    assert cache_of(response) == "bypass"
    assert cache_of(roundtrip(gw.port, "POST", "/post", {}, b"{}", host=HOST)) == "bypass"
    assert origin.count("/post") == 2


# -- the key ---------------------------------------------------------------------------------
def test_the_key_is_host_path_query_vary_and_key_headers(gw: Gateway, origin: Origin) -> None:
    origin.set("/k", ("cache-control", "max-age=60"), ("vary", "X-Lang"))
    assert cache_of(get(gw, "/k?a=1")) == "miss"
    assert cache_of(get(gw, "/k?a=2")) == "miss"  # another query
    assert cache_of(get(gw, "/k?a=1")) == "hit"
    en = get(gw, "/k", x_lang="en")
    fr = get(gw, "/k", x_lang="fr")
    assert cache_of(en) == cache_of(fr) == "miss"
    assert json.loads(get(gw, "/k", x_lang="fr").body)["lang"] == "fr"
    assert cache_of(get(gw, "/k", x_lang="en")) == "hit"
    assert cache_of(get(gw, "/k", x_lang="en", x_tenant="t1")) == "miss"  # keyHeaders
    assert cache_of(get(gw, "/k", x_lang="en", x_tenant="t1")) == "hit"
    assert origin.count("/k") == 5


def test_head_is_answered_from_the_get_entry(gw: Gateway, origin: Origin) -> None:
    full = get(gw, "/head")
    head = get(gw, "/head", method="HEAD")
    assert cache_of(head) == "hit" and head.body == b""
    assert head.header("content-length") == str(len(full.body))
    assert origin.count("/head") == 1


# -- conditionals and revalidation -----------------------------------------------------------
def test_client_conditionals_are_answered_304(gw: Gateway, origin: Origin) -> None:
    origin.set("/cond", ("cache-control", "max-age=60"), ("etag", '"v7"'),
               ("last-modified", LAST_MODIFIED))
    get(gw, "/cond")
    matched = get(gw, "/cond", if_none_match='W/"v0", "v7"')
    assert matched.status == 304 and cache_of(matched) == "hit" and matched.body == b""
    assert matched.header("etag") == '"v7"'
    assert get(gw, "/cond", if_none_match='"other"').status == 200
    assert get(gw, "/cond", if_modified_since=LAST_MODIFIED).status == 304
    assert get(gw, "/cond", if_modified_since="Tue, 20 Oct 2015 07:28:00 GMT").status == 200
    assert origin.count("/cond") == 1


@pytest.mark.parametrize("validator", ["etag", "last-modified"])
def test_a_stale_entry_is_revalidated_with_its_validator(gw: Gateway, origin: Origin,
                                                         validator: str) -> None:
    value = '"r1"' if validator == "etag" else LAST_MODIFIED
    origin.set("/reval", ("cache-control", "max-age=1"), (validator, value))
    first = get(gw, "/reval")
    time.sleep(1.2)
    again = get(gw, "/reval")
    assert again.status == 200 and cache_of(again) == "hit"
    assert again.body == first.body  # the stored body, freshened by a 304
    conditional = origin.upstream.requests[-1]
    asked = "if-none-match" if validator == "etag" else "if-modified-since"
    assert conditional.header(asked) == value
    assert origin.count("/reval") == 2 and origin.served == 1
    assert int(again.header("age") or 99) <= 1  # its age restarted


def test_a_changed_answer_replaces_the_entry(gw: Gateway, origin: Origin) -> None:
    origin.set("/changed", ("cache-control", "max-age=1"), ("etag", '"a"'))
    first = get(gw, "/changed")
    origin.set("/changed", ("cache-control", "max-age=60"), ("etag", '"b"'))
    time.sleep(1.2)
    second = get(gw, "/changed")
    assert cache_of(second) == "miss" and version(second) > version(first)
    assert cache_of(get(gw, "/changed")) == "hit"


def test_stale_while_revalidate(gw: Gateway, origin: Origin) -> None:
    origin.set("/swr", ("cache-control", "max-age=1, stale-while-revalidate=30"),
               ("etag", '"s"'))
    get(gw, "/swr")
    time.sleep(1.2)
    origin.delay = 0.5  # the revalidation is slow; the client does not wait for it
    started = time.monotonic()
    stale = get(gw, "/swr")
    assert cache_of(stale) == "stale" and time.monotonic() - started < 0.4
    poll_until(lambda: origin.count("/swr") == 2, 5, message="background revalidation")
    assert origin.upstream.requests[-1].header("if-none-match") == '"s"'
    poll_until(lambda: cache_of(get(gw, "/swr")) == "hit", 5, message="fresh again")


def test_stale_if_error(gw: Gateway, origin: Origin) -> None:
    origin.set("/sie", ("cache-control", "max-age=1, stale-if-error=30"), ("etag", '"e"'))
    origin.set("/sie-strict", ("cache-control", "max-age=1, must-revalidate, "
                                                "stale-if-error=30"), ("etag", '"m"'))
    first = get(gw, "/sie")
    get(gw, "/sie-strict")
    origin.set("/sie", status=503)
    origin.set("/sie-strict", status=503)
    time.sleep(1.2)  # both stale now
    stale = get(gw, "/sie")
    assert stale.status == 200 and cache_of(stale) == "stale" and stale.body == first.body
    assert get(gw, "/sie-strict").status == 503  # must-revalidate forbids serving it stale


def test_concurrent_misses_collapse_into_one_upstream_request(gw: Gateway,
                                                              origin: Origin) -> None:
    origin.delay = 0.5
    answers: list[Response] = []

    def one() -> None:
        answers.append(get(gw, "/collapse"))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(answers) == 6 and {a.status for a in answers} == {200}
    assert origin.count("/collapse") == 1
    assert sorted(cache_of(a) or "" for a in answers) == ["hit"] * 5 + ["miss"]
    assert len({a.body for a in answers}) == 1


# -- bounds, headers, purges -----------------------------------------------------------------
def test_least_recently_used_entries_go_first_past_max_bytes(gw: Gateway,
                                                             origin: Origin) -> None:
    """maxBytes is 200 KiB: 60 KiB answers, four fit at most; /lru/0 stays in use."""
    origin.set("/lru/big", ("cache-control", "max-age=60"))
    big = {f"/lru/{i}": i for i in range(5)}
    for path in big:
        origin.set(path, ("cache-control", "max-age=60"))
    origin.upstream.reset(lambda req: Reply(headers=[("content-type", "text/plain"), *origin
                          .headers.get(req.path, [])], body_size=60 * 1024))
    for path in big:
        get(gw, path)
        assert cache_of(get(gw, "/lru/0")) == "hit"  # recently used, so kept
    assert cache_of(get(gw, "/lru/1")) == "miss"  # the least recently used went first
    assert cache_of(get(gw, "/lru/4")) == "hit"


def test_age_and_the_cache_header(gw: Gateway, origin: Origin) -> None:
    origin.set("/age", ("cache-control", "max-age=60"), ("age", "5"))
    miss = get(gw, "/age")
    assert cache_of(miss) == "miss"
    time.sleep(1.1)
    hit = get(gw, "/age")
    assert cache_of(hit) == "hit" and int(hit.header("age") or 0) >= 6
    assert hit.header_all("x-propylon-cache") == ["hit"]


def test_purge_by_prefix_and_by_tag(gw: Gateway, origin: Origin) -> None:
    origin.set("/p/a", ("cache-control", "max-age=60"), ("cache-tag", "red, blue"))
    origin.set("/p/b", ("cache-control", "max-age=60"), ("cache-tag", "blue"))
    origin.set("/q/c", ("cache-control", "max-age=60"), ("cache-tag", "green"))
    for path in ("/p/a", "/p/b", "/q/c"):
        get(gw, path)
        assert cache_of(get(gw, path)) == "hit"
    answer = purge(gw, prefix=f"{HOST}/p/a")
    assert answer["purged"] == {"prefix": f"{HOST}/p/a"}
    assert cache_of(get(gw, "/p/a")) == "miss"
    assert cache_of(get(gw, "/p/b")) == "hit"
    purge(gw, tag="blue")
    assert [cache_of(get(gw, p)) for p in ("/p/a", "/p/b", "/q/c")] == ["miss", "miss", "hit"]


def test_purge_refuses_a_bad_rule(gw: Gateway, origin: Origin) -> None:
    for rule in ({}, {"prefix": "a", "tag": "b"}, {"prefix": ""}, {"nope": "x"}):
        with pytest.raises(urllib.error.HTTPError) as caught:
            purge(gw, **rule)
        assert caught.value.code == 400
        caught.value.close()


def test_hits_never_reach_the_policies_after_cache(gw: Gateway, origin: Origin) -> None:
    """faultInjection runs after cache: its delay slows misses, never hits."""
    def timed(call: Callable[[], Response]) -> tuple[float, Response]:
        started = time.monotonic()
        response = call()
        return time.monotonic() - started, response

    slow, miss = timed(lambda: get(gw, "/fault/x"))
    fast, hit = timed(lambda: get(gw, "/fault/x"))
    assert cache_of(miss) == "miss" and slow >= 0.4
    assert cache_of(hit) == "hit" and fast < 0.3


# -- Redis -----------------------------------------------------------------------------------
def test_a_redis_store_is_shared_by_two_proxies(gateways, upstreams, redis_port: int) -> None:
    import redis

    up = upstreams("redis-origin")
    origin = Origin(up)
    origin.set("/shared", ("cache-control", "max-age=60"), ("cache-tag", "t"))
    prefix = f"test:{time.time_ns()}"
    store = {"cache": {"store": "redis", "redis": {"address": f"127.0.0.1:{redis_port}",
                                                  "prefix": prefix, "timeout": "1s"}}}

    def config(port: int) -> str:
        return r.dump(r.gateway(port), r.route("cached", hostnames=[HOST], rules=[r.rule(
            {"prefix": "/"}, forward=r.forward("up"), policies=[store])]),
            r.upstream("up", up.port))

    first, second = gateways(config, wait=False), gateways(config, wait=False)
    for gateway in (first, second):  # both start together
        gateway.wait_ready()
    assert cache_of(get(first, "/shared")) == "miss"
    # the entry is written after the answer: asked before that, the second proxy missed too
    # and went upstream (a second request there, seen once in 36 runs on a loaded machine)
    client = redis.Redis(port=redis_port)
    try:
        poll_until(lambda: client.exists(f"{prefix}:k:{HOST}/shared"), 5, message="stored")
    finally:
        client.close()
    assert cache_of(get(second, "/shared")) == "hit"
    assert origin.count("/shared") == 1
    head = get(second, "/shared", method="HEAD")
    assert cache_of(head) == "hit"
    answer = purge(first, tag="t")
    assert list(answer["redis"].values()) == [1]
    assert cache_of(get(second, "/shared")) == "miss"


# -- invalidation by unsafe methods (RFC 9111 §4.4) --------------------------------------------
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_an_unsafe_method_invalidates_the_target_uri(gw: Gateway, origin: Origin,
                                                     method: str) -> None:
    origin.set("/inv/item", ("cache-control", "max-age=60"), ("vary", "X-Lang"))
    before = {lang: get(gw, "/inv/item", x_lang=lang) for lang in ("en", "fr")}
    tenant = get(gw, "/inv/item", x_lang="en", x_tenant="t1")  # another keyHeaders value
    assert [cache_of(get(gw, "/inv/item", x_lang=lang)) for lang in ("en", "fr")] == [
        "hit", "hit"]
    assert cache_of(get(gw, "/inv/item", x_lang="en", x_tenant="t1")) == "hit"
    changed = roundtrip(gw.port, method, "/inv/item", {}, b"{}", host=HOST)
    assert changed.status == 200 and cache_of(changed) == "bypass"
    for lang in ("en", "fr"):  # every variant went
        after = get(gw, "/inv/item", x_lang=lang)
        assert cache_of(after) == "miss" and version(after) > version(before[lang])
    after = get(gw, "/inv/item", x_lang="en", x_tenant="t1")
    assert cache_of(after) == "miss" and version(after) > version(tenant)
    assert cache_of(get(gw, "/inv/item", x_lang="en")) == "hit"  # stored again


def test_location_and_content_location_on_the_same_host_are_invalidated(
        gw: Gateway, origin: Origin) -> None:
    for path in ("/inv/a", "/inv/b?page=2", "/inv/c"):
        origin.set(path.partition("?")[0], ("cache-control", "max-age=60"))
        get(gw, path)
        assert cache_of(get(gw, path)) == "hit"
    origin.set("/inv/create", ("location", f"http://{HOST}/inv/b?page=2"),
               ("content-location", "c"), status=201)
    created = roundtrip(gw.port, "POST", "/inv/create", {}, b"{}", host=HOST)
    assert created.status == 201
    assert [cache_of(get(gw, p)) for p in ("/inv/b?page=2", "/inv/c", "/inv/a")] == [
        "miss", "miss", "hit"]
    origin.set("/inv/away", ("location", "http://elsewhere.test/inv/a"), status=303)
    assert roundtrip(gw.port, "POST", "/inv/away", {}, b"{}", host=HOST).status == 303
    assert cache_of(get(gw, "/inv/a")) == "hit"  # another host's URI is left alone


def test_an_error_answer_to_an_unsafe_method_invalidates_nothing(gw: Gateway,
                                                                 origin: Origin) -> None:
    origin.set("/inv/keep", ("cache-control", "max-age=60"))
    first = get(gw, "/inv/keep")
    origin.set("/inv/keep", ("cache-control", "max-age=60"), status=409)
    assert roundtrip(gw.port, "POST", "/inv/keep", {}, b"{}", host=HOST).status == 409
    again = get(gw, "/inv/keep")
    assert cache_of(again) == "hit" and again.body == first.body


def test_an_invalidation_reaches_every_worker(gateways, upstreams) -> None:
    """Memory stores are per worker: the worker that sees the POST tells the others through
    the purge log, as an admin purge; no worker answers the old body afterwards."""
    origin = Origin(upstreams("inv-origin"))
    origin.set("/w", ("cache-control", "max-age=60"))
    gw = gateways(lambda port: r.dump(r.gateway(port), r.route("cached", hostnames=[HOST], rules=[
        r.rule({"prefix": "/"}, forward=r.forward("up"), policies=[{"cache": {}}])]),
        r.upstream("up", origin.upstream.port)), workers=2)

    def worker(response: Response) -> str:
        return (response.header("x-request-id") or "")[:23]  # the process's id prefix

    hits: dict[str, int] = {}
    for _ in range(200):  # a new connection each: the kernel spreads them over the workers
        response = get(gw, "/w")
        if cache_of(response) == "hit":
            hits[worker(response)] = version(response)
        if len(hits) == 2:
            break
    assert len(hits) == 2, "both workers hold the entry"
    assert roundtrip(gw.port, "DELETE", "/w", {}, host=HOST).status == 200
    seen: dict[str, list[int]] = {}
    for _ in range(200):
        response = get(gw, "/w")
        seen.setdefault(worker(response), []).append(version(response))
        if len(seen) == 2 and all(len(v) >= 2 for v in seen.values()):
            break
    assert len(seen) == 2
    old = set(hits.values())
    assert all(v not in old for versions in seen.values() for v in versions), (hits, seen)


# -- what a hit carries --------------------------------------------------------------------------
def test_a_hit_carries_the_later_policies_fields_once(gw: Gateway, origin: Origin) -> None:
    """cors, rateLimit, headers and the session add their fields after the cache's place in
    the chain: they add them again to a hit, so the entry must not hold them."""
    origin.set("/chain/x", ("cache-control", "max-age=60"), ("etag", '"e1"'),
               ("accept-ranges", "bytes"))
    fields = {"origin": ORIGIN, "accept-encoding": "gzip"}
    miss = roundtrip(gw.port, "GET", "/chain/x", fields, host=HOST)
    hit = roundtrip(gw.port, "GET", "/chain/x", fields, host=HOST)
    assert cache_of(miss) == "miss" and cache_of(hit) == "hit"
    for name in ("x-request-id", "x-added", "x-set", "access-control-allow-origin",
                 "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset",
                 "content-encoding", "etag", "x-propylon-cache"):
        assert len(hit.header_all(name)) == 1, (name, hit.headers)
    assert hit.header("x-request-id") != miss.header("x-request-id")
    assert int(hit.header("ratelimit-remaining") or 0) < int(
        miss.header("ratelimit-remaining") or 0)
    assert hit.header("content-encoding") == "gzip" and hit.header("etag") == 'W/"e1"'
    assert hit.header("accept-ranges") is None and hit.body == miss.body
    vary = [v.strip().lower() for f in hit.header_all("vary") for v in f.split(",")]
    assert sorted(vary) == ["accept-encoding", "origin"]
    # cors decides per request on a hit: another origin gets no allow-origin field
    other = roundtrip(gw.port, "GET", "/chain/x", {"origin": "https://evil.test",
                                                   "accept-encoding": "gzip"}, host=HOST)
    assert cache_of(other) == "hit" and other.header("access-control-allow-origin") is None
    assert origin.count("/chain/x") == 1
    # the identity variant: compression (before the cache) names Accept-Encoding once
    plain = [roundtrip(gw.port, "GET", "/chain/x", {"origin": ORIGIN}, host=HOST)
             for _ in range(2)]
    assert [cache_of(p) for p in plain] == ["miss", "hit"]
    assert plain[1].header("content-encoding") is None and plain[1].header("etag") == '"e1"'
    vary = [v.strip().lower() for f in plain[1].header_all("vary") for v in f.split(",")]
    assert sorted(vary) == ["accept-encoding", "origin"]
    assert len(plain[1].header_all("x-request-id")) == 1


# -- collapsed misses that cannot be answered from the first one ---------------------------------
def parallel(gw: Gateway, paths: list[tuple[str, dict[str, str]]], gap: float = 0.1
             ) -> list[tuple[float, Response]]:
    """The requests started ``gap`` apart; each one's time from the first start to its end."""
    results: list[tuple[float, Response] | None] = [None] * len(paths)
    started = time.monotonic()

    def one(index: int, path: str, headers: dict[str, str]) -> None:
        response = roundtrip(gw.port, "GET", path, headers, host=HOST)
        results[index] = (time.monotonic() - started, response)

    threads = []
    for index, (path, headers) in enumerate(paths):
        thread = threading.Thread(target=one, args=(index, path, headers))
        thread.start()
        threads.append(thread)
        time.sleep(gap)
    for thread in threads:
        thread.join(20)
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


def slow_reply(*headers: tuple[str, str]) -> Callable[[RecordedRequest], Reply]:
    return lambda request: Reply(headers=[("content-type", "text/plain"), *headers],
                                 body=b"x" * 400, framing="chunked")


@pytest.mark.parametrize("headers", [
    pytest.param([("cache-control", "no-store")], id="not-storable"),
    pytest.param([("cache-control", "max-age=60")], id="over-max-entry-bytes"),
])
def test_misses_that_cannot_be_stored_do_not_wait_for_each_other(
        gw: Gateway, origin: Origin, slow_upstream: Any, headers: list[tuple[str, str]]
        ) -> None:
    """Each body takes 1.2 s: one after the other, three took 3.6 s."""
    slow_upstream.reset(slow_reply(*headers))
    path = f"/slow/{time.time_ns()}"
    results = parallel(gw, [(path, {})] * 3)
    assert [response.status for _, response in results] == [200] * 3
    assert all(len(response.body) == 400 for _, response in results)
    assert max(elapsed for elapsed, _ in results) < 2.2, [e for e, _ in results]
    assert sum(1 for req in slow_upstream.requests if req.path == path) == 3


def test_another_variant_does_not_wait_for_the_first_ones_body(gw: Gateway, origin: Origin,
                                                               slow_upstream: Any) -> None:
    slow_upstream.reset(slow_reply(("cache-control", "max-age=60"), ("vary", "x-lang")))
    path = f"/slow-vary/{time.time_ns()}"
    results = parallel(gw, [(path, {"x-lang": "en"}), (path, {"x-lang": "fr"}),
                            (path, {"x-lang": "en"})])
    en, fr, en_again = results
    assert cache_of(en[1]) == "miss" and cache_of(fr[1]) == "miss"
    assert cache_of(en_again[1]) == "hit"  # the same variant still waits and is a hit
    assert fr[0] < 2.0, [e for e, _ in results]  # 1.3 s: it did not wait for en's 1.2 s
    assert sum(1 for req in slow_upstream.requests if req.path == path) == 2


# -- keys ----------------------------------------------------------------------------------------
def test_key_header_values_cannot_run_into_each_other(gw: Gateway, origin: Origin) -> None:
    """x-tenant: a|b + x-region: c is not x-tenant: a + x-region: b|c."""
    origin.set("/two/k", ("cache-control", "max-age=60"))
    first = get(gw, "/two/k", x_tenant="a|b", x_region="c")
    second = get(gw, "/two/k", x_tenant="a", x_region="b|c")
    assert cache_of(first) == cache_of(second) == "miss"
    assert version(second) > version(first)
    assert cache_of(get(gw, "/two/k", x_tenant="a%7Cb", x_region="c")) == "miss"
    assert cache_of(get(gw, "/two/k", x_tenant="a|b", x_region="c")) == "hit"
    assert cache_of(get(gw, "/two/k", x_tenant="a", x_region="b|c")) == "hit"


def test_a_prefix_purge_finds_escaped_paths(gw: Gateway, origin: Origin) -> None:
    origin.set("/caf%C3%A9/menu", ("cache-control", "max-age=60"))
    get(gw, "/caf%C3%A9/menu", x_tenant="t%1")
    assert cache_of(get(gw, "/caf%C3%A9/menu", x_tenant="t%1")) == "hit"
    purge(gw, prefix=f"{HOST}/caf%C3%A9/menu|t%1")
    assert cache_of(get(gw, "/caf%C3%A9/menu", x_tenant="t%1")) == "miss"


def redis_gateway(gateways: Any, up: ScriptedUpstream, redis_port: int, timeout: str = "1s",
                  **cache: Any) -> tuple[Gateway, str]:
    prefix = f"test:{time.time_ns()}"
    store = {"cache": {"store": "redis", "redis": {"address": f"127.0.0.1:{redis_port}",
                                                  "prefix": prefix, "timeout": timeout},
                       **cache}}
    gw = gateways(lambda port: r.dump(r.gateway(port), r.route("cached", hostnames=[HOST], rules=[
        r.rule({"prefix": "/"}, forward=r.forward("up"), policies=[store])]),
        r.upstream("up", up.port)))
    return gw, prefix


def test_redis_a_changed_answer_drops_only_that_entry(gateways, upstreams,
                                                      redis_port: int) -> None:
    """A failed revalidation of /api/items dropped every key starting with it."""
    origin = Origin(upstreams("redis-drop"))
    gw, _ = redis_gateway(gateways, origin.upstream, redis_port)
    origin.set("/api/items", ("cache-control", "max-age=1"), ("etag", '"a"'))
    for path in ("/api/items", "/api/items/1", "/api/items2"):
        get(gw, path)
        poll_until(lambda p=path: cache_of(get(gw, p)) == "hit", 5, message=path)
    origin.set("/api/items", ("cache-control", "max-age=60"), ("etag", '"b"'))
    time.sleep(1.2)
    assert cache_of(get(gw, "/api/items")) == "miss"  # revalidated: changed, dropped
    assert [cache_of(get(gw, p)) for p in ("/api/items/1", "/api/items2")] == ["hit", "hit"]


def test_redis_purge_counts_and_tag_sets_expire(gateways, upstreams, redis_port: int) -> None:
    import redis

    origin = Origin(upstreams("redis-tags"))
    gw, prefix = redis_gateway(gateways, origin.upstream, redis_port)
    answer = purge(gw, tag="no-such-tag")
    assert list(answer["redis"].values()) == [0]  # was -1
    origin.set("/tagged", ("cache-control", "max-age=60"), ("cache-tag", "t1"))
    get(gw, "/tagged")
    client = redis.Redis(port=redis_port)
    try:
        poll_until(lambda: client.exists(f"{prefix}:t:t1") == 1, 5, message="tag set")
        assert 0 < client.ttl(f"{prefix}:t:t1") <= 122  # it goes with its entries (60 s + 1 min)
    finally:
        client.close()
    assert list(purge(gw, tag="t1")["redis"].values()) == [1]


def test_redis_an_unsafe_method_invalidates_every_variant(gateways, upstreams,
                                                          redis_port: int) -> None:
    origin = Origin(upstreams("redis-inv"))
    gw, _ = redis_gateway(gateways, origin.upstream, redis_port, keyHeaders=["x-tenant"])
    origin.set("/doc", ("cache-control", "max-age=60"), ("vary", "X-Lang"))
    origin.set("/doc/sub", ("cache-control", "max-age=60"))
    variants = [{"x_lang": "en"}, {"x_lang": "fr"}, {"x_lang": "en", "x_tenant": "t1"}]
    before = [get(gw, "/doc", **v) for v in variants]
    get(gw, "/doc/sub")
    for fields in variants:
        poll_until(lambda f=fields: cache_of(get(gw, "/doc", **f)) == "hit", 5, message="hit")
    poll_until(lambda: cache_of(get(gw, "/doc/sub")) == "hit", 5, message="hit")
    assert roundtrip(gw.port, "PUT", "/doc", {}, b"{}", host=HOST).status == 200
    for fields, old in zip(variants, before, strict=True):
        after = get(gw, "/doc", **fields)
        assert cache_of(after) == "miss" and version(after) > version(old), fields
    assert cache_of(get(gw, "/doc/sub")) == "hit"  # not a prefix: that URI only



STORE_TIMEOUT = 0.2  # the redis.timeout of the tests below


def test_a_hung_redis_store_is_skipped_after_failures_in_a_row(gateways, upstreams) -> None:
    """A Redis that takes connections and never answers: every lookup waited the whole
    redis.timeout. After three failures in a row the store is skipped (a miss at once) but for
    one probe a second, so ten requests pay a few timeouts, not ten, and a request after the
    skipping second pays one (the probe)."""
    origin = Origin(upstreams("redis-hung"))
    origin.set("/hung", ("cache-control", "max-age=60"))
    # the kernel takes the connections (its backlog); nobody accepts, reads or answers them,
    # and no thread is left to stop
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(128)
        gw, _ = redis_gateway(gateways, origin.upstream, hung.getsockname()[1],
                              timeout=f"{STORE_TIMEOUT * 1000:g}ms")
        times = [timed_miss(gw) for _ in range(10)]
        time.sleep(1.1)  # the skipping second has passed: one probe, then skipped again
        probe = [timed_miss(gw) for _ in range(2)]
        gw.stop()
    shown = [f"{t * 1000:.0f} ms" for t in times + probe]
    assert len([t for t in times if t >= STORE_TIMEOUT * 0.9]) <= 4, shown
    assert probe[0] >= STORE_TIMEOUT * 0.9 and probe[1] < STORE_TIMEOUT * 0.9, shown


def timed_miss(gw: Gateway) -> float:
    start = time.monotonic()
    answer = get(gw, "/hung")
    assert answer.status == 200 and cache_of(answer) == "miss"
    return time.monotonic() - start


def test_one_slow_redis_answer_does_not_stop_the_store(gateways, upstreams, tmp_path) -> None:
    """Redis hung for one lookup's timeout, then answering again: the next entry is stored
    at once, for every proxy (skipping Redis for a second after one failure, 656b7b8, left
    it out and another proxy missed it). After a hang long enough to skip Redis, a probe
    finds it answering again and entries are stored again."""
    import redis

    server = RedisServer(tmp_path)
    client = redis.Redis(port=server.port)
    try:
        origin = Origin(upstreams("redis-slow"))
        gw, prefix = redis_gateway(gateways, origin.upstream, server.port,
                                   timeout=f"{STORE_TIMEOUT * 1000:g}ms")
        server.pause()
        try:
            assert cache_of(get(gw, "/slow")) == "miss"  # its lookup had no answer in time
        finally:
            server.resume()
        assert cache_of(get(gw, "/next")) == "miss"
        poll_until(lambda: client.exists(f"{prefix}:k:{HOST}/next"), 5, message="stored")

        server.pause()
        try:
            for i in range(6):  # enough failures in a row to skip Redis
                get(gw, f"/hang/{i}")
        finally:
            server.resume()
        poll_until(lambda: cache_of(get(gw, "/after")) == "hit", 5, message="probed")
    finally:
        client.close()
        server.stop()
