"""``settle_heap`` (the supervisor, once its first configuration serves): a large block freed
afterwards is given back to the system, even after a larger one raised glibc's threshold."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from propylon.runtime import heap_trim

PROGRAM = textwrap.dedent("""
    import os
    from propylon.runtime.heap_trim import settle_heap

    def resident() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    first = bytes(24 << 20)  # freed: glibc now takes blocks up to this size from the heap
    del first
    assert settle_heap()
    before = resident()
    blocks = [b"x" * (8 << 20) for _ in range(4)]  # 32 MiB, every page written
    del blocks
    print((resident() - before) >> 20)
""")


@pytest.mark.skipif(heap_trim._LIBC is None, reason="not glibc")
def test_large_blocks_are_given_back_once_settled() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                          check=True)
    assert int(done.stdout) < 8, done.stdout  # MiB kept of the 32 freed
