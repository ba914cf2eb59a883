"""Gateway bugs the HTTP/1.1 fuzz target found, reported and not fixed yet.

A fuzz run that stopped at the first input showing one of them would find nothing else, so
unless ``PROPYLON_FUZZ_KNOWN=fail`` the harness recognises each one and counts it instead:
either where it starts (``pattern`` None: the harness steps around it, as a fixed gateway
would behave, and the rest of the input is still checked) or by the problems it causes
(``pattern``, plus ``also``: problems that follow from it in the same input). An input with
any other problem fails. The fuzz test prints the counts; each issue has a reproducer in
``crashes/http11/`` listed in ``test_fuzz.OPEN``. When a fix lands, the reproducer passes, the
strict xfail fails, and the entry here goes with the one there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownIssue:
    description: str
    pattern: str | None = None  # a problem it causes (None: recognised where it starts)
    also: str | None = None  # problems that follow from it


KNOWN_ISSUES: dict[str, KnownIssue] = {
    "late-connect": KnownIssue(
        "a pool connect that completes (or fails) after its request already answered (route "
        "timeout, perTryTimeout, a 413 from requestLimits on a chunked body) is handed to the "
        "ended request: it goes upstream and the upstream's answer is written to the client "
        "as an extra response (read as the answer to the next request), or the failure "
        "aborts the client connection and the request is finished twice"
    ),
    "write-after-eof": KnownIssue(
        "a read that holds more than the request a local answer closed the connection on "
        "(with linger: write_eof) is still parsed to its end; a parse error in the rest "
        "writes a 400 after write_eof(), which a real transport refuses with RuntimeError "
        "inside data_received (ERROR 'Fatal error: protocol.data_received() call failed')"
    ),
    "pipelined-method-split": KnownIssue(
        "a request pipelined behind another whose method ends exactly where a read ends gets "
        "400 'malformed request line': the next read starts with the space after the method, "
        "and the extra-spaces check (downstream._odd_request_line) takes it for the start of "
        "a request line, since no request object exists until the target is parsed"
    ),
    "head-bound-counts-body": KnownIssue(
        "a pipelined request whose head starts in a read that also ends a large body gets 431: "
        "the unfinished-head bound (downstream.data_received, head_read) adds the whole read, "
        "the previous request's body bytes included",
        r"other answers: \[.*request header fields too large",
        r"requests reached the upstream, \d+ were sent",
    ),
    "header-timeout-while-paused": KnownIssue(
        "a pipelined request whose head was partly read when reading paused (an earlier "
        "request in flight) gets 408 once headerReadTimeout passes: the rest of its head waits "
        "in the socket because the gateway does not read, yet the timer runs",
        r"other answers: \[.*request header timeout",
        r"requests reached the upstream, \d+ were sent",
    ),
    "asterisk-form-forward": KnownIssue(
        "OPTIONS * forwarded upstream: the request's query is never set for an asterisk-form "
        "target (AttributeError building the upstream head, logged 'request handling failed', "
        "a 500)",
        r"has no attribute 'query'",
        r"^a 500 answer",
    ),
    "no-host-upstream": KnownIssue(
        "an HTTP/1.0 request without Host is forwarded as an HTTP/1.1 request without Host "
        "(RFC 9112 3.2: a server must answer 400 to that)",
        r"upstream request with 0 Host fields",
    ),
}


def attribute(problems: list[str]) -> tuple[set[str], list[str]]:
    """The known issues ``problems`` show, and the problems none of them explains."""
    known = {name for name, issue in KNOWN_ISSUES.items()
             if issue.pattern and any(re.search(issue.pattern, p) for p in problems)}
    unknown = [p for p in problems if not any(_explains(KNOWN_ISSUES[n], p) for n in known)]
    return known, unknown


def _explains(issue: KnownIssue, problem: str) -> bool:
    return any(pattern and re.search(pattern, problem) for pattern in (issue.pattern, issue.also))
