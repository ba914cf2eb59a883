"""The http-desync-guardian corpus through a real gateway to an upstream that records every byte.

Severe and Ambiguous cases must get 400, a closed connection, and the upstream must receive
nothing. Compliant and Acceptable cases must reach the upstream with their framing intact (the
body the upstream parses is the body that was sent). The cases docs/edge.md lists as treated
differently on purpose are in ``DELIBERATELY_REJECTED``, each with its reason; they must get
the same answer as a Severe case. Counts per tier are printed by the last test of the module.
"""

from __future__ import annotations

import collections
import glob
import os
import time
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.support import report
from tests.support import resources as r
from tests.support.client import ConnectionClosed, RawClient
from tests.support.gateway import Gateway
from tests.support.net import poll_until
from tests.support.recording import RecordingUpstream

CORPUS = "/work/shared/conformance/http-desync-guardian"
REJECT_TIERS = ("Severe", "Ambiguous")
CHUNKED_BODY = b"5\r\nhello\r\n0\r\n\r\n"
BIG_BODY = 10**6  # Content-Length at or above this: no body is sent, only the head is judged

# Cases the corpus calls Compliant or Acceptable that Propylon rejects on purpose (docs/edge.md,
# "The desync corpus"). Keyed by "<file stem>/<case name>"; every entry must still be in the
# corpus and must really be rejected (400 + close + upstream saw nothing).
CONTROL = "control character (\\x01) in a header name or value: llhttp strict grammar"
VERSION = "only HTTP/1.0 and HTTP/1.1 are accepted (no HTTP/0.9, no HTTP/1.2)"
TARGET = "empty or non-ASCII request target: llhttp strict grammar"
SPACES = "extra spaces in the request line: llhttp strict grammar"
UNDERSCORE = "header name with '_': rejected by default (limits.rejectUnderscoreHeaders)"
CHUNK_PARAMS = "parameters on the final 'chunked' coding: RFC 9112 defines none"
# Not in docs/edge.md's list, but required by RFC 9112 section 5.1 ("A server MUST reject ...
# any received request message that contains whitespace between a header field name and colon").
WS_BEFORE_COLON = "whitespace between a field name and ':' (RFC 9112 5.1 requires 400)"
FRAGMENT = "'#' in the request target: never sent by a client (RFC 9112 3.2); 400 by default"
DELIBERATELY_REJECTED: dict[str, str] = {
    "rfc-compliant/Compliant URL": FRAGMENT,
    "acceptable/No TE/CL headers, some others are non-compliant": WS_BEFORE_COLON,
    "acceptable/TE and some others are non-compliant": WS_BEFORE_COLON,
    "acceptable/CL and some others are non-compliant": WS_BEFORE_COLON,
    "acceptable/A non-essential header with a non-printable character (x01)": CONTROL,
    "bad-header-characters/Some-Header\\x01": CONTROL,
    "bad-header-characters/\\x01Some-Header": CONTROL,
    "bad-header-characters/Some-Header: \\x01value": CONTROL,
    "bad-header-characters/Some-Header: value\\x01": CONTROL,
    "acceptable/Non-RFC, but OK HTTP/0.9": VERSION,
    "acceptable/Empty version, which means HTTP/0.9": VERSION,
    "acceptable/Unknown but OK HTTP/1.2": VERSION,
    "rfc-compliant/International in URI": TARGET,
    "rfc-compliant/Empty URI": TARGET,
    "uri-specific-test-cases/Extra spaces in version": SPACES,
    "uri-specific-test-cases/[space] in URI": SPACES,
    # the name is "My-Custom-Header.!#$%&'*+^_`|~0123456789": every tchar, '_' included
    "rfc-compliant/Valid custom header with tchar in name and obs-text": UNDERSCORE,
    "rfc-compliant/Valid custom header with underscore in name": UNDERSCORE,
    "more-compliant-tests/TE with custom parameters OK": CHUNK_PARAMS,
    "rfc-compliant/Transfer-Encoding with a param: chunked;custom_param": CHUNK_PARAMS,
}


@dataclass
class Case:
    key: str
    tier: str
    raw: bytes
    body: bytes | None  # what the upstream must parse; None: a big body, only the head is sent
    method: str

    @property
    def must_reject(self) -> bool:
        return self.tier in REJECT_TIERS or self.key in DELIBERATELY_REJECTED


def to_bytes(value: Any) -> bytes:
    """Corpus strings as bytes: latin-1 when every character fits, else UTF-8 (never cleaned)."""
    text = "" if value is None else str(value)
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def build_case(file_stem: str, doc: dict[str, Any]) -> Case:
    headers = [(to_bytes(h["name"]), to_bytes(h.get("value"))) for h in doc.get("headers") or []]
    lines = [b" ".join(to_bytes(doc.get(k)) for k in ("method", "uri", "version"))]
    if not any(name.lower() == b"host" for name, _ in headers):
        lines.append(b"Host: gw.test")
    lines += [name + b": " + value for name, value in headers]
    te = [v for n, v in headers if n.strip().lower() == b"transfer-encoding"]
    cl = [v for n, v in headers if n.strip().lower() == b"content-length"]
    sent, body = b"", b""  # body: what the upstream must parse; None when it is not sent
    if te and b"chunked" in te[-1].lower():
        sent, body = CHUNKED_BODY, b"hello"
    elif cl and cl[0].strip().isdigit():
        size = int(cl[0].strip())
        sent = body = b"a" * size if size < BIG_BODY else b""
        if size >= BIG_BODY:
            body = None
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + sent
    key = f"{file_stem}/{doc['name']}"
    return Case(key, doc["expected"]["tier"], raw, body, str(doc.get("method") or "GET"))


def load_cases() -> list[Case]:
    cases = []
    for path in sorted(glob.glob(f"{CORPUS}/*.yaml")):
        stem = os.path.basename(path).removesuffix(".yaml")
        with open(path, encoding="utf-8") as fh:
            cases += [build_case(stem, doc) for doc in yaml.safe_load(fh) or []]
    return cases


CASES = load_cases()
OUTCOMES: collections.Counter[tuple[str, str]] = collections.Counter()


@pytest.fixture(scope="module")
def gw(module_gateways, recorder: RecordingUpstream) -> Gateway:
    return module_gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("all", rules=[r.rule(forward=r.forward("rec"))]),
        r.upstream("rec", recorder.port),
    ))


def assert_rejected(gw: Gateway, up: RecordingUpstream, case: Case) -> None:
    with RawClient(gw.port, timeout=5) as client:
        client.send(case.raw)
        try:
            response = client.read_final(case.method)
        except ConnectionClosed as exc:
            raise AssertionError(f"closed without an answer: {exc}") from None
        assert response.status == 400, response
        assert client.closed_by_peer(3), "connection left open after 400"
    time.sleep(0.05)  # anything forwarded would have arrived by now on loopback
    assert up.received == b"", f"upstream saw {up.received[:300]!r}"


def assert_forwarded(gw: Gateway, up: RecordingUpstream, case: Case) -> None:
    with RawClient(gw.port, timeout=5) as client:
        client.send(case.raw)
        if case.body is None:  # a huge declared body: only the head is judged
            poll_until(lambda: b"\r\n\r\n" in up.received, 5, message="head at upstream")
            return
        response = client.read_final(case.method)
    assert response.status == 200 and response.header("x-upstream") == "rec", response
    (request,) = up.wait_for_requests(1, timeout=5)
    assert request.body == case.body, (request.framing, request.raw_body[:200])


@pytest.mark.parametrize("case", [pytest.param(c, id=c.key) for c in CASES])
def test_desync_case(gw: Gateway, recorder: RecordingUpstream, case: Case) -> None:
    recorder.reset()
    outcome = "rejected" if case.must_reject else "forwarded"
    try:
        (assert_rejected if case.must_reject else assert_forwarded)(gw, recorder, case)
    except BaseException:
        OUTCOMES[(case.tier, "FAILED")] += 1
        raise
    label = "rejected (allow-list)" if case.key in DELIBERATELY_REJECTED else outcome
    OUTCOMES[(case.tier, label)] += 1


def test_allow_list_names_real_non_rejecting_cases() -> None:
    """Every allow-list entry is a corpus case whose tier would otherwise be forwarded."""
    tiers = {c.key: c.tier for c in CASES}
    for key in DELIBERATELY_REJECTED:
        assert key in tiers, f"allow-list entry {key!r} is not in the corpus"
        assert tiers[key] not in REJECT_TIERS, f"{key!r} is {tiers[key]}: no need to allow-list"


def test_desync_summary() -> None:
    """The counts per tier, in the "desync corpus" section of pytest's summary
    (tests/support/report.py)."""
    by_tier = collections.Counter(c.tier for c in CASES)
    report.add("desync corpus", f"{len(CASES)} cases")
    for tier in ("Severe", "Ambiguous", "Acceptable", "Compliant"):
        detail = ", ".join(f"{label} {n}" for (t, label), n in sorted(OUTCOMES.items())
                           if t == tier)
        report.add("desync corpus", f"  {tier:<10} {by_tier[tier]:>3}: {detail or 'not run'}")
    assert sum(by_tier.values()) == len(CASES)
