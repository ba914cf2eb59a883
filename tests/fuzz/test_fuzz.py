"""Fuzzing in the test command: regression inputs replayed, then each target for a bounded time.

- ``test_regression``: every file in ``crashes/<target>/`` (inputs that once broke a property,
  kept for ever) goes through the target's check, strictly (known issues fail). The
  reproducers of issues reported but not fixed yet are ``OPEN``: expected to fail, and the test
  fails as soon as one passes (``xfail_strict``), so that the entry (and its
  ``known_issues`` one) gets removed.
- ``test_seeds``: every seed passes (known issues tolerated, as in a fuzz run); this runs even
  where atheris is missing or the bounded runs are off.
- ``test_fuzz``: ``python -m tests.fuzz.run TARGET`` under atheris for
  ``PROPYLON_FUZZ_SECONDS`` (default 60; 0 skips it, with a reason), seeded with the seeds
  and the regression inputs. An input that breaks a property is written to
  ``crashes/<target>/`` (so it becomes a regression case) and the test fails with its report.
  ``fuzz TARGET: N executions in S s (X/s), C crashes`` and the known-issue counts appear in
  the "fuzzing" section of pytest's summary (``tests/support/report.py``).

Longer runs with a corpus kept between runs: ``scripts/fuzz`` (docs/operations.md); the child
process is started by ``tests/fuzz/driver.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import propylon
from tests.fuzz import seeds
from tests.fuzz.driver import CRASHES, TARGETS, run_target
from tests.support import report

# The targets drive the proxy in memory with test doubles that subclass its classes, and
# atheris needs Python bytecode for coverage: they run in scripts/test's pure-Python pass.
pytestmark = pytest.mark.skipif(
    propylon.EXTENSIONS, reason="fuzzing runs on the pure-Python modules "
    "(PROPYLON_NO_EXTENSIONS=1: scripts/test's second pass)")

SECONDS = float(os.environ.get("PROPYLON_FUZZ_SECONDS", "60"))

# crashes/<target>/<file> -> the issue it reproduces (tests/fuzz/known_issues.py), reported
# and not fixed yet
OPEN: dict[str, str] = {}  # e.g. {"http11/<file>": "open issue <name> (known_issues.py)"}


def _check(target: str) -> Callable[[bytes], None]:
    if target == "http11":
        from tests.fuzz.http_target import check_http

        return check_http
    if target == "proxy":
        from tests.fuzz.proxy_target import check_proxy

        return check_proxy
    from tests.fuzz.config_target import check_config

    return check_config


def _crash_cases() -> list[object]:
    cases = []
    for target in TARGETS:
        for path in sorted((CRASHES / target).glob("*")):
            if path.name.startswith("."):
                continue
            key = f"{target}/{path.name}"
            marks = [pytest.mark.xfail(reason=OPEN[key], strict=True)] if key in OPEN else []
            cases.append(pytest.param(target, path, id=key, marks=marks))
    return cases


@pytest.fixture(scope="module", autouse=True)
def _close_loops() -> Iterator[None]:
    yield
    from tests.fuzz import config_target, http_target

    http_target.close()
    config_target.close()


@pytest.fixture
def strict(monkeypatch: pytest.MonkeyPatch) -> None:
    """Known issues are failures here: a regression input must reproduce exactly."""
    from tests.fuzz import http_target

    monkeypatch.setattr(http_target.gateway(), "strict", True)


@pytest.mark.parametrize(("target", "path"), _crash_cases())
def test_regression(target: str, path: Path, strict: None) -> None:
    _check(target)(path.read_bytes())


@pytest.mark.parametrize("target", TARGETS)
def test_seeds(target: str) -> None:
    """Every seed passes the target's check (known issues counted, as in a fuzz run): the
    seeds run even where atheris is missing or the bounded runs are off."""
    check = _check(target)
    failures = []
    for seed in seeds.all_seeds(target):
        try:
            check(seed)
        except AssertionError as exc:
            failures.append(f"{seed[:120]!r}: {exc}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.skipif(SECONDS <= 0, reason="PROPYLON_FUZZ_SECONDS=0: bounded fuzz runs off")
@pytest.mark.timeout(SECONDS + 180)
@pytest.mark.parametrize("target", TARGETS)
def test_fuzz(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris (dev dependency) is needed to fuzz")
    result = run_target(target, SECONDS, tmp_path)
    report.add("fuzzing", result.summary())
    assert result.crashes == [], result.failure_text()
    # an input already in crashes/ that fails stops the run at once (test_regression shows it)
    assert result.returncode == 0 and result.runs > 0, result.failure_log()


