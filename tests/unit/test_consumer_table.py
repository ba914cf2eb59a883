"""A worker keeps one table of the configuration's consumers, whatever the number of versions
it compiles: a table per version (each holding every consumer and up to 10,000 accepted keys)
was kept for the worker's life, one more with every change that built an apiKey or basicAuth
filter. Equal consumers keep the table (and its accepted keys); changed ones make a new one,
and the filters built before keep theirs (the worker's is the last one only)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os

from propylon import ir
from propylon.config import load_text
from propylon.filters.base import FilterEnv
from propylon.ir.delta import reuse_unchanged
from propylon.ir.model import BasicUserIR, ConsumerIR
from propylon.runtime.compile import Services, compile_snapshot
from propylon.translate import translate
from propylon.translate.consumers import hash_password
from tests.support.filter_ctx import Ctx
from tests.support.resources import shop_gateway_yaml

CONFIG = shop_gateway_yaml('[{apiKey: {}}]') + """---
apiVersion: propylon.dev/v1
kind: Consumer
metadata: {name: acme, namespace: shop}
spec:
  credentials: {apiKeys: [{secretRef: {env: CONSUMER_TABLE_KEY}}]}
"""


def version(routes: int) -> ir.SnapshotIR:
    text = CONFIG + "".join(f"""---
apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: r{i}, namespace: shop}}
spec:
  rules: [{{matches: [{{path: {{exact: /r{i}}}}}], directResponse: {{status: 200}}}}]
""" for i in range(routes))
    return ir.seal(translate(load_text(text).resources))


def tables(runtime) -> set[int]:  # type: ignore[no-untyped-def]
    """The consumer tables the runtime's apiKey filters use, by id."""
    router = runtime.gateways["shop/edge"].router
    return {id(router.match("x", "GET", f"/r{i}", None).chain.filters[0].consumers.table)
            for i in range(3)}


def test_one_consumer_table_across_versions_a_new_one_when_consumers_change(
        monkeypatch) -> None:
    monkeypatch.setenv("CONSUMER_TABLE_KEY", "first")
    loop = asyncio.new_event_loop()
    try:
        services = Services.scratch(loop)
        services.env = FilterEnv(loop)
        last = version(3)
        runtime = compile_snapshot(last, services)
        (first,) = tables(runtime)
        for routes in range(4, 24):  # a Route added each time: new apiKey filters
            last = reuse_unchanged(version(routes), last)
            runtime = compile_snapshot(last, services)
            assert tables(runtime) == {first}
        shared = dict(services.env._objects)
        assert len(shared) == 1, list(shared)
        table = shared[("consumers",)].table
        assert table is not None and id(table) == first
        assert table.by_api_key(b"first") is not None

        monkeypatch.setenv("CONSUMER_TABLE_KEY", "second")
        changed = reuse_unchanged(version(23), last)
        runtime = compile_snapshot(changed, services)
        (second,) = tables(runtime)
        assert second != first and len(services.env._objects) == 1
        router = runtime.gateways["shop/edge"].router
        new_table = router.match("x", "GET", "/r0", None).chain.filters[0].consumers.table
        assert new_table.by_api_key(b"second") is not None
        assert new_table.by_api_key(b"first") is None
        assert services.env._objects[("consumers",)].table is new_table  # the last one only
    finally:
        loop.close()
        os.environ.pop("CONSUMER_TABLE_KEY", None)


def _basic(user: str, password: str, labels: dict[str, str]) -> ConsumerIR:
    salt = b"0123456789abcdef"
    return ConsumerIR("shop/c", "c", labels=labels, basic_auth=(BasicUserIR(
        user, salt.hex(), hash_password(password, salt, 1000), 1000),))


def test_a_password_rotated_or_labels_changed_are_served_by_the_kept_filter() -> None:
    """A basicAuth filter kept across a Consumer change (its chain is not built again) knows
    the accepted credentials of the committed consumers only: the old password, accepted and
    remembered before, is refused after the rotation; the consumer's changed labels are the
    ones sent upstream."""
    loop = asyncio.new_event_loop()
    try:
        services = Services.scratch(loop)
        base = translate(load_text(CONFIG.replace("policies: [{apiKey: {}}]",
                                                  "policies: [{basicAuth: {}}]") + """---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: r0, namespace: shop}
spec:
  rules: [{matches: [{path: {exact: /r0}}], directResponse: {status: 200}}]
""").resources)

        def compiled(password: str, tier: str):  # type: ignore[no-untyped-def]
            snap = dataclasses.replace(base, consumers=(_basic("u", password, {"tier": tier}),))
            runtime = compile_snapshot(snap, services)
            return runtime.gateways["shop/edge"].router.match("x", "GET", "/r0", None).chain

        def answer(chain, password: str) -> tuple[bool, list[tuple[bytes, bytes]]]:  # type: ignore[no-untyped-def]
            value = b"Basic " + base64.b64encode(b"u:" + password.encode())
            ctx = Ctx(headers=[(b"authorization", value)])
            return chain.filters[0].on_request(ctx) is None, ctx.request_headers

        old = compiled("old-secret", "gold")
        assert answer(old, "old-secret") == (True, [(b"x-consumer-name", b"c"),
                                                   (b"x-consumer-labels", b"tier=gold")])
        assert answer(old, "old-secret")[0]  # remembered as accepted
        new = compiled("new-secret", "silver")
        assert new is old  # the very chain, its filter kept
        assert not answer(new, "old-secret")[0]
        assert answer(new, "new-secret") == (True, [(b"x-consumer-name", b"c"),
                                                   (b"x-consumer-labels", b"tier=silver")])
    finally:
        loop.close()
