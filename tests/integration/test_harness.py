"""The Redis tests' own harness (tests/integration/conftest.py): what a worker process logs is
all there when a test reads it, however the reads and the writes interleave."""

from __future__ import annotations

import subprocess
import sys
import time

from conftest import child_log, read_log

# The first line says what a test waits for ("blocks"); the second comes while the parent
# reads, as a worker's second line can come 1 ms after its first.
CHILD = r"""
import sys, time
sys.stderr.write("worker w1: pipeline 'keyed', blocks count, on redis://127.0.0.1/0\n")
sys.stderr.flush()
time.sleep(0.3)
sys.stderr.write("pipeline 'keyed[count]': starting 1 block: count (async x4), a longer line\n")
sys.stderr.flush()
"""


def test_a_line_a_worker_writes_while_its_log_is_read_goes_after_the_others() -> None:
    log = child_log()
    try:
        proc = subprocess.Popen([sys.executable, "-c", CHILD], stderr=log)
        deadline = time.monotonic() + 30
        while "blocks" not in read_log(log):  # the first line is in
            assert time.monotonic() < deadline, "the child never wrote its first line"
            time.sleep(0.01)
        # The old reader's seek(0), left where the child's second line comes: that line went
        # to offset 0, over the first one, and "blocks" was gone.
        log.seek(0)
        assert proc.wait(timeout=30) == 0
        lines = read_log(log).splitlines()
    finally:
        log.close()
    assert len(lines) == 2, lines
    assert "blocks count" in lines[0]
    assert "starting 1 block" in lines[1]
