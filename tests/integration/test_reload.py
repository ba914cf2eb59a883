"""Hot reload: file watching, refused changes, SIGHUP, and no failed request across reloads."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import resources as r
from tests.support.client import RawClient, Response, roundtrip
from tests.support.gateway import Gateway, metric_value
from tests.support.net import poll_until
from tests.support.upstream import Reply, ScriptedUpstream, echo_reply


def config(
    *paths: str, generation: int = 0, upstream_port: int | None = None
) -> Callable[[int], str]:
    """Direct-response rules at ``paths`` answering their own path, a forward rule at /fwd
    when ``upstream_port`` is given, and ``x-gen: <generation>`` on every response."""
    rules = [r.rule({"exact": p}, directResponse={"status": 200, "body": p}) for p in paths]
    docs = []
    if upstream_port is not None:
        rules.append(r.rule({"prefix": "/fwd"}, forward=r.forward("up")))
        docs.append(r.upstream("up", upstream_port))
    policies = [r.headers_policy(response={"set": {"x-gen": str(generation)}})]
    return lambda port: r.dump(r.gateway(port, policies=policies),
                               r.route("main", rules=rules), *docs)


def body_of(gw: Gateway, path: str) -> tuple[int, bytes]:
    response = roundtrip(gw.port, "GET", path)
    return response.status, response.body


@pytest.fixture(scope="module")
def watched(module_gateways) -> Gateway:
    return module_gateways(config("/a"), watch=True)


def failures(gw: Gateway) -> float:
    return metric_value(gw.metrics(), "propylon_config_reloads_total", result="failure")


def test_file_change_is_served(watched) -> None:
    version = watched.version()
    watched.write_config(config("/a", "/b"))
    poll_until(lambda: body_of(watched, "/b") == (200, b"/b"), 10, message="/b served")
    assert watched.version() != version
    assert body_of(watched, "/a") == (200, b"/a")


def test_a_file_of_another_kind_next_to_the_config_reloads_nothing(watched) -> None:
    """A log written into the configuration folder (``propylon run . > gateway.log``) is
    not configuration: it reloaded on every line written, the reload's own log line
    included."""
    log_file = watched.config_dir / "gateway.log"
    for line in range(10):
        with log_file.open("a") as out:
            out.write(f"line {line}\n")
        time.sleep(0.05)
    time.sleep(0.6)  # past the watcher's debounce
    assert "gateway.log" not in watched.stderr_text()
    version = watched.version()
    watched.write_config(config("/a", "/e"))
    poll_until(lambda: body_of(watched, "/e") == (200, b"/e"), 10, message="/e served")
    assert watched.version() != version
    assert "configuration changed (" in watched.stderr_text()
    assert "gateway.log" not in watched.stderr_text()


def _configmap_update(folder: Path, text: str, generation: int) -> None:
    """What the kubelet does to a ConfigMap mounted as a folder: the files written to a new
    ``..<timestamp>`` folder, ``..data`` swapped to it by a rename, the old folder removed;
    the visible ``gateway.yaml`` is a link to ``..data/gateway.yaml`` throughout."""
    stamp = folder / f"..2026_12_04_00_00_0{generation}.1"
    stamp.mkdir()
    (stamp / "gateway.yaml").write_text(text)
    old = os.readlink(folder / "..data") if (folder / "..data").is_symlink() else None
    os.symlink(stamp.name, folder / "..data_tmp")
    os.replace(folder / "..data_tmp", folder / "..data")
    if old is not None:
        shutil.rmtree(folder / old)
    if not (folder / "gateway.yaml").is_symlink():
        (folder / "gateway.yaml").unlink(missing_ok=True)
        os.symlink("..data/gateway.yaml", folder / "gateway.yaml")


def test_a_configmap_mounted_as_a_folder_is_read_once_and_its_updates_reload(
        tmp_path: Path) -> None:
    """Each file of a mounted ConfigMap is also in ``..data/`` and ``..<timestamp>/``: read
    three times, every resource was "defined twice"; an update swaps ``..data``."""
    gw = Gateway(tmp_path, config("/a"), watch=True)
    try:
        _configmap_update(gw.config_dir, gw.render(config("/a")), 1)
        gw.start()
        assert "defined twice" not in gw.stderr_text()
        assert body_of(gw, "/a") == (200, b"/a")
        _configmap_update(gw.config_dir, gw.render(config("/a", "/cm")), 2)
        poll_until(lambda: body_of(gw, "/cm") == (200, b"/cm"), 10, message="/cm served")
        assert gw.reloads() == (1, 0)
        assert "defined twice" not in gw.stderr_text()
    finally:
        gw.stop()


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("apiVersion: propylon.dev/v1\nkind: Gateway\nspec: [unclosed\n",
                     id="yaml-syntax-error"),
        # a schema error is contained (tests/integration/test_containment.py); a document
        # that names no resource cannot be: its file is served as it last loaded (the only
        # file here: the version served stays), and the reload is a failure
        pytest.param(lambda port: config("/a", "/c")(port)
                     + "---\napiVersion: propylon.dev/v1\nkind: Rout\nmetadata: {name: x}\n",
                     id="unknown-kind"),
    ],
)
def test_invalid_change_is_refused_and_the_old_config_keeps_serving(watched, bad) -> None:
    watched.write_config(config("/a"))
    poll_until(lambda: body_of(watched, "/b")[0] == 404, 10, message="baseline installed")
    version, before = watched.version(), failures(watched)
    watched.write_config(bad)
    poll_until(lambda: failures(watched) == before + 1, 10, message="reload failure counted")
    assert watched.version() == version
    assert body_of(watched, "/a") == (200, b"/a")
    assert watched.stats()["reloads"]["last_error"]
    watched.write_config(config("/a"))  # the next good file is taken again
    watched.write_config(config("/a", "/d"))
    poll_until(lambda: body_of(watched, "/d") == (200, b"/d"), 10, message="recovered")


def _team(name: str, *paths: str) -> str:
    return r.dump(r.route(name, rules=[
        r.rule({"exact": p}, directResponse={"status": 200, "body": p}) for p in paths]))


def test_a_broken_file_keeps_its_last_version_and_the_other_files_changes_are_served(
        tmp_path: Path) -> None:
    """One team's file with a YAML syntax error (which names no resource, so cannot be
    contained resource by resource) is served as it last loaded; another team's change,
    in the same reload or after, is served; each such reload is a failure in the metrics,
    with the file's error."""
    gw = Gateway(tmp_path, config("/main"), watch=True)
    gw.write_config(_team("team-a", "/a"), "team-a.yaml")
    gw.write_config(_team("team-b", "/b"), "team-b.yaml")
    gw.start()
    try:
        assert body_of(gw, "/a") == (200, b"/a") and body_of(gw, "/b") == (200, b"/b")
        version = gw.version()
        gw.write_config(_team("team-a", "/a", "/a2") + "spec: [unclosed\n", "team-a.yaml")
        poll_until(lambda: failures(gw) == 1, 10, message="the broken file's reload failed")
        assert gw.version() == version and body_of(gw, "/a") == (200, b"/a")
        error = gw.stats()["reloads"]["last_error"]
        assert error.startswith(f"{gw.config_dir / 'team-a.yaml'}:") and "invalid YAML" in error
        assert "configuration refused in part, serving " in gw.stderr_text()
        gw.write_config(_team("team-b", "/b", "/b2"), "team-b.yaml")
        poll_until(lambda: body_of(gw, "/b2") == (200, b"/b2"), 10, message="/b2 served")
        assert body_of(gw, "/a") == (200, b"/a") and body_of(gw, "/a2")[0] == 404
        poll_until(lambda: failures(gw) == 2, 10, message="still kept back: a failure")
        gw.write_config(_team("team-a", "/a", "/a2"), "team-a.yaml")
        poll_until(lambda: body_of(gw, "/a2") == (200, b"/a2"), 10, message="mended, served")
        assert gw.reloads() == (1, 2) and body_of(gw, "/b2") == (200, b"/b2")
    finally:
        gw.stop()


def test_sighup_reloads(module_gateways) -> None:
    gw = module_gateways(config("/a"), watch=False)
    gw.write_config(config("/a", "/hup"))
    time.sleep(0.5)  # long enough for a watcher to have noticed, were there one
    assert body_of(gw, "/hup")[0] == 404
    gw.signal(signal.SIGHUP)
    poll_until(lambda: body_of(gw, "/hup") == (200, b"/hup"), 10, message="/hup served")
    assert gw.reloads() == (1, 0)


class Hammer:
    """Client threads sending requests on keep-alive connections until stopped (bounded)."""

    def __init__(self, port: int, threads: int = 2, max_requests: int = 60_000,
                 max_seconds: float = 60.0) -> None:
        self.port = port
        self.max_requests = max_requests
        self.deadline = time.monotonic() + max_seconds
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.failures: list[str] = []
        self.generations: Counter[str] = Counter()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(threads)]

    def __enter__(self) -> Hammer:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)

    def done(self) -> bool:
        return (self.stop.is_set() or self.sent >= self.max_requests
                or time.monotonic() > self.deadline)

    def run(self, index: int) -> None:
        client: RawClient | None = None
        while not self.done():
            path = "/fwd/x" if index % 2 else "/a"
            try:
                if client is None:
                    client = RawClient(self.port, timeout=10)
                client.request("GET", path)
                response = client.read_final()
                failure = None if response.status == 200 else f"status {response.status}"
            except Exception as exc:
                failure = f"{type(exc).__name__}: {exc}"
                response = None
            with self.lock:
                self.sent += 1
                if failure:
                    self.failures.append(f"{path}: {failure}")
                elif response is not None:
                    self.generations[response.header("x-gen") or "?"] += 1
            if failure and client is not None:
                client.close()
                client = None
        if client is not None:
            client.close()


def test_no_failed_request_through_20_reloads(module_gateways, module_upstreams) -> None:
    up: ScriptedUpstream = module_upstreams("reload")
    gw = module_gateways(config("/a", upstream_port=up.port), watch=True)
    versions = {gw.version()}
    with Hammer(gw.port) as hammer:
        poll_until(lambda: hammer.sent >= 50, 10, message="traffic flowing")
        for generation in range(1, 21):
            gw.write_config(config("/a", generation=generation, upstream_port=up.port))
            poll_until(
                lambda g=generation: roundtrip(gw.port, "GET", "/a").header("x-gen") == str(g),
                10, interval=0.01, message=f"generation {generation} installed",
            )
            versions.add(gw.version())
        poll_until(lambda: hammer.generations["20"] >= 50, 10, message="last generation seen")
    print(f"\n12d: {hammer.sent} requests through 20 reloads, {len(hammer.failures)} failed, "
          f"responses per generation: {dict(hammer.generations)}")
    assert len(versions) == 21
    assert hammer.failures == [], hammer.failures[:10]
    assert gw.reloads() == (20, 0)
    assert set(hammer.generations) == {str(g) for g in range(21)}, hammer.generations


def test_a_request_in_flight_keeps_the_gateway_policies_it_was_routed_with(
        module_gateways, module_upstreams) -> None:
    """A Gateway's own policies edited: the workers keep every rule's compiled routes, which
    take their new chains as the version is installed (``RouteMemo.rechain``). A request
    routed before that runs the chain it was routed with to its end: its answer, given by
    the upstream after the install, gets the old version's response header, and the next
    request the new one's."""
    up: ScriptedUpstream = module_upstreams("in-flight")
    up.handler = lambda q: (Reply(body=b"late", delay=1.5) if q.target == "/fwd/slow"
                            else echo_reply(q, up.name))
    gw = module_gateways(config("/a", upstream_port=up.port), watch=True)
    answers: list[Response] = []
    slow = threading.Thread(target=lambda: answers.append(
        roundtrip(gw.port, "GET", "/fwd/slow", timeout=15)))
    slow.start()
    try:
        poll_until(lambda: any(q.target == "/fwd/slow" for q in up.requests), 10,
                   message="the slow request reached the upstream")
        gw.write_config(config("/a", generation=1, upstream_port=up.port))
        poll_until(lambda: roundtrip(gw.port, "GET", "/fwd/x").header("x-gen") == "1", 10,
                   interval=0.01, message="generation 1 installed")
    finally:
        slow.join(15)
    assert [(a.status, a.body, a.header("x-gen")) for a in answers] == [(200, b"late", "0")]
    assert roundtrip(gw.port, "GET", "/a").header("x-gen") == "1"
    assert gw.reloads() == (1, 0)


def test_an_upstream_moved_to_another_server_takes_the_traffic_without_a_failed_request(
        module_gateways, module_upstreams) -> None:
    """An Upstream whose endpoints change keeps its cluster in the workers, given the new
    endpoints when the version is installed (``compile.kept_cluster``): the traffic goes to
    the new endpoint, and no request fails through the moves."""
    first, second = module_upstreams("first"), module_upstreams("second")
    gw = module_gateways(config("/a", upstream_port=first.port), watch=True)
    assert roundtrip(gw.port, "GET", "/fwd/x").header("x-upstream") == "first"
    with Hammer(gw.port) as hammer:
        poll_until(lambda: hammer.sent >= 50, 10, message="traffic flowing")
        for generation, up in enumerate((second, first, second), start=1):
            gw.write_config(config("/a", generation=generation, upstream_port=up.port))
            poll_until(
                lambda u=up: roundtrip(gw.port, "GET", "/fwd/x").header("x-upstream") == u.name,
                10, interval=0.01, message=f"{up.name} takes the traffic")
        sent = hammer.sent
        poll_until(lambda: hammer.sent >= sent + 50, 10, message="traffic after the moves")
    assert hammer.failures == [], hammer.failures[:10]
    assert gw.reloads() == (3, 0)


def test_an_upstream_rebalanced_serves_as_configured_without_a_failed_request(
        module_gateways, module_upstreams) -> None:
    """An Upstream whose balancing changes keeps its cluster in the workers, which takes the
    new settings over when the version is installed (``compile.kept_cluster``): round robin
    over two servers, then ring hash on a header (one server per key), then round robin
    again; no request fails through the changes."""
    first, second = module_upstreams("first"), module_upstreams("second")
    rules = [r.rule({"exact": "/a"}, directResponse={"status": 200, "body": "/a"}),
             r.rule({"prefix": "/fwd"}, forward=r.forward("up"))]
    hashed = {"loadBalancer": {"policy": "ring_hash", "hashOn": {"header": "x-user"}}}

    def balanced(**spec: object) -> Callable[[int], str]:
        return lambda port: r.dump(r.gateway(port), r.route("main", rules=rules),
                                   r.upstream("up", first.port, second.port, **spec))

    def servers(user: str) -> set[str]:
        return {roundtrip(gw.port, "GET", "/fwd/x", headers={"x-user": user}).header(
            "x-upstream") for _ in range(8)}

    gw = module_gateways(balanced(), watch=True)
    assert servers("u1") == {"first", "second"}
    with Hammer(gw.port) as hammer:
        poll_until(lambda: hammer.sent >= 50, 10, message="traffic flowing")
        gw.write_config(balanced(**hashed))
        poll_until(lambda: gw.reloads() == (1, 0), 10, message="ring hash installed")
        assert all(len(servers(f"u{i}")) == 1 for i in range(6))
        assert len(set.union(*(servers(f"u{i}") for i in range(12)))) == 2  # keys spread
        gw.write_config(balanced())
        poll_until(lambda: gw.reloads() == (2, 0), 10, message="round robin installed")
        sent = hammer.sent
        poll_until(lambda: hammer.sent >= sent + 50, 10, message="traffic after the changes")
    assert hammer.failures == [], hammer.failures[:10]
    # once the traffic stopped: with it, a client's requests can alternate with the
    # hammer's /fwd requests and meet one server each time (seen once in CI)
    assert servers("u1") == {"first", "second"}
