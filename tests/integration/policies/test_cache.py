"""The ``cache`` policy (RFC 9111 shared cache) through a real gateway process, a scripted
upstream that counts what reaches it, the admin listener and a real Redis: one test per rule
of the issue (what is stored, the key and its variants, HEAD from GET, clients' conditionals,
revalidation with ETag and Last-Modified, stale-while-revalidate, stale-if-error, collapsed
misses, LRU by bytes, Redis shared by two proxies, Age and x-propylon-cache, purges by prefix
and tag, hits never reaching the policies after ``cache``)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.support import resources as r
from tests.support.client import roundtrip
from tests.support.gateway import Gateway
from tests.support.h1 import Response
from tests.support.net import poll_until
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


def cache_routes(extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    cache = {"cache": {"maxBytes": "200KiB", "keyHeaders": ["x-tenant"], **(extra or {})}}
    return [
        r.rule({"prefix": "/ttl/"}, forward=r.forward("up"),
               policies=[{"cache": {"defaultTtl": "60s"}}]),
        r.rule({"prefix": "/fault/"}, forward=r.forward("up"), policies=[
            {**cache, "faultInjection": {"delay": {"fixed": "400ms"}}}]),
        r.rule({"prefix": "/"}, forward=r.forward("up"), policies=[cache]),
    ]


@pytest.fixture(scope="module")
def gw(module_gateways, shared_upstream: ScriptedUpstream) -> Gateway:
    return module_gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("cached", hostnames=[HOST], rules=cache_routes()),
        r.upstream("up", shared_upstream.port),
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
    first = get(gw, "/sie")
    origin.set("/sie", status=503)
    time.sleep(1.2)
    stale = get(gw, "/sie")
    assert stale.status == 200 and cache_of(stale) == "stale" and stale.body == first.body
    origin.set("/sie-strict", ("cache-control", "max-age=1, must-revalidate, "
                                                "stale-if-error=30"), ("etag", '"m"'))
    get(gw, "/sie-strict")
    origin.set("/sie-strict", status=503)
    time.sleep(1.2)
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
    poll_until(lambda: cache_of(get(second, "/shared")) == "hit", 5, message="shared hit")
    assert origin.count("/shared") == 1
    head = get(second, "/shared", method="HEAD")
    assert cache_of(head) == "hit"
    answer = purge(first, tag="t")
    assert list(answer["redis"].values()) == [1]
    assert cache_of(get(second, "/shared")) == "miss"
