"""Run one fuzz target under atheris (libFuzzer, coverage-guided on propylon's own code).

    python -m tests.fuzz.run http11|config|proxy [libFuzzer flags] [CORPUS_DIR ...]

``PROPYLON_FUZZ_STATS=PATH``: the target writes its run count, when it started and the
known-issue counts there, twice a second (libFuzzer ends the process with exit(), so nothing
runs at the end). ``scripts/fuzz`` and ``tests/fuzz/test_fuzz.py`` are the usual callers.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable

import atheris

TARGETS = ("http11", "config", "proxy")


class Stats:
    """Executions and known-issue counts, written to a file now and then."""

    def __init__(self, path: str | None, known: Callable[[], dict[str, int]]) -> None:
        self.path = path
        self.known = known
        self.runs = 0
        self.started = 0.0
        self.written = 0.0

    def count(self) -> None:
        self.runs += 1
        now = time.time()
        if self.runs == 1:
            self.started = now
        if self.path and (now - self.written > 0.5 or self.runs == 1):
            self.written = now
            data = {"runs": self.runs, "started": self.started, "known": self.known()}
            with open(self.path + ".tmp", "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(self.path + ".tmp", self.path)


def _http11(stats: Stats) -> Callable[[bytes], None]:
    with atheris.instrument_imports(include=["propylon"]):
        from tests.fuzz import http_target

    stats.known = lambda: dict(http_target.gateway().known_hits)

    def one_input(data: bytes) -> None:
        stats.count()
        http_target.check_http(data)

    return one_input


def _proxy(stats: Stats) -> Callable[[bytes], None]:
    with atheris.instrument_imports(include=["propylon.proxy.proxy_protocol"]):
        from tests.fuzz import proxy_target

    def one_input(data: bytes) -> None:
        stats.count()
        proxy_target.check_proxy(data)

    return one_input


def _config(stats: Stats) -> tuple[Callable[[bytes], None], Callable[[bytes, int, int], bytes]]:
    # the IR codec is hot and simple: left uninstrumented, for speed
    with atheris.instrument_imports(include=["propylon"], exclude=["propylon.ir.codec"]):
        from tests.fuzz import config_target
    from tests.fuzz.seeds import config_seeds

    config_target.VOCABULARY.extend(config_target.vocabulary(config_seeds()))

    def one_input(data: bytes) -> None:
        stats.count()
        config_target.check_config(data)

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        if random.Random(seed).random() < 0.75:
            mutated = config_target.mutate_structure(data, seed)
            if mutated is not None and len(mutated) <= max_size:
                return mutated
        return atheris.Mutate(data, max_size)

    return one_input, mutator


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.run {'|'.join(TARGETS)} [libFuzzer flags] [DIR...]")
    # libFuzzer's -jobs / -fork start the program again from argv[0] through the shell
    target = sys.argv[1]
    argv = [f"{sys.executable} -m tests.fuzz.run {target}", *sys.argv[2:]]
    stats = Stats(os.environ.get("PROPYLON_FUZZ_STATS"), dict)
    if target == "http11":
        atheris.Setup(argv, _http11(stats))
    elif target == "proxy":
        atheris.Setup(argv, _proxy(stats))
    else:
        one_input, mutator = _config(stats)
        atheris.Setup(argv, one_input, custom_mutator=mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
