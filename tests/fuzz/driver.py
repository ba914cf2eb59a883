"""Start a fuzz target in a child process for a bounded time and read what it did.

    python -m tests.fuzz.driver TARGET [--seconds N] [--corpus DIR] [-- libFuzzer flags]

The child is ``python -m tests.fuzz.run TARGET`` (atheris) with the target's seeds, its
dictionary and its regression inputs (``crashes/TARGET/``); new inputs libFuzzer finds go to
``--corpus`` (a temporary folder unless given: ``scripts/fuzz`` keeps one between runs). An input
that breaks a property is written to ``crashes/TARGET/`` and becomes a regression case.
``FuzzRun.summary()`` is the line the issue reports:
``fuzz TARGET: N executions in S s (X/s), C crashes``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.fuzz import seeds

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CRASHES = HERE / "crashes"
TARGETS = ("http11", "config", "proxy")


class FuzzRun:
    def __init__(self, target: str, runs: int, seconds: float, crashes: list[Path],
                 known: dict[str, int], log: str, returncode: int) -> None:
        self.target = target
        self.runs = runs
        self.seconds = seconds
        self.crashes = crashes
        self.known = known
        self.log = log
        self.returncode = returncode

    def summary(self) -> str:
        rate = self.runs / self.seconds if self.seconds else 0.0
        line = (f"fuzz {self.target}: {self.runs} executions in {self.seconds:.1f} s "
                f"({rate:.0f}/s), {len(self.crashes)} crashes")
        if self.known:
            counts = ", ".join(f"{name} x{count}" for name, count in sorted(self.known.items()))
            line += f"; known open issues hit: {counts}"
        return line

    def failure_text(self) -> str:
        kept = "\n".join(f"  {p.relative_to(ROOT)}" for p in self.crashes)
        return (f"{self.summary()}\ninputs kept as regression cases:\n{kept}\n"
                f"replay: python -m pytest tests/fuzz -k regression\n\n{self.failure_log()}")

    def failure_log(self) -> str:
        """What the target said about the input that failed, else the end of the log."""
        start = self.log.rfind("=== Uncaught Python exception: ===")
        if start < 0:
            return self.log[-6000:]
        end = self.log.find("ERROR: libFuzzer", start)
        return self.log[start:end if end > 0 else None][:12000]


def run_target(target: str, seconds: float, work: Path, corpus: Path | None = None,
               extra: tuple[str, ...] = ()) -> FuzzRun:
    """Fuzz ``target`` for ``seconds`` in a child process; crash inputs go to crashes/."""
    seed_dir, corpus = work / "seeds", corpus or work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    seeds.write_seeds(target, seed_dir)
    dictionary = work / f"{target}.dict"
    seeds.write_dictionary(target, dictionary)
    crash_dir = CRASHES / target
    crash_dir.mkdir(parents=True, exist_ok=True)
    before = set(crash_dir.iterdir())
    stats = work / "stats.json"
    command = [
        sys.executable, "-m", "tests.fuzz.run", target,
        f"-max_total_time={max(int(seconds), 1)}", f"-dict={dictionary}", "-timeout=30",
        "-rss_limit_mb=2048", "-max_len=16384", f"-artifact_prefix={crash_dir}/", *extra,
        str(corpus), str(seed_dir), str(crash_dir),
    ]
    # the pure-Python modules: atheris instruments bytecode, compiled ones would give no coverage
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROPYLON_FUZZ_STATS": str(stats),
           "PROPYLON_NO_EXTENSIONS": "1"}
    scratch = work / "cwd"  # relative paths a configuration names resolve in here
    scratch.mkdir(exist_ok=True)
    done = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True,
                          errors="replace", check=False)
    end = time.time()
    log = done.stdout + done.stderr
    crashes = sorted(set(crash_dir.iterdir()) - before)
    data = json.loads(stats.read_text()) if stats.exists() else {}
    runs, elapsed = _counts(log, data, end)
    return FuzzRun(target, runs, elapsed, crashes, data.get("known", {}), log, done.returncode)


def _counts(log: str, data: dict[str, object], end: float) -> tuple[int, float]:
    """Executions (libFuzzer's count, else the target's) and the seconds from the first one
    to the end of the process (start-up and seed loading left out)."""
    found = re.findall(r"^Done (\d+) runs in", log, flags=re.M)
    runs = int(found[-1]) if found else int(str(data.get("runs", 0)))
    started = float(str(data.get("started", end)))
    return runs, max(end - started, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--seconds", type=float, default=3600)
    parser.add_argument("--corpus", type=Path, help="kept between runs (default: temporary)")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # libFuzzer flags
    args = parser.parse_args(argv[:len(argv) - len(extra) - (1 if "--" in argv else 0)])
    corpus = args.corpus.resolve() if args.corpus else None
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{args.target}-") as tmp:
        result = run_target(args.target, args.seconds, Path(tmp), corpus, tuple(extra))
    print(result.summary())
    if result.crashes:
        print(result.failure_text())
        sys.exit(1)
    if result.runs == 0:
        print(result.log[-3000:])
        sys.exit(1)


if __name__ == "__main__":
    main()
