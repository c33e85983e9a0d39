"""The suite's own safety net (tests/conftest.py): a test that hangs fails, on asyncio's loop
and on uvloop alike, and the run goes on to the next test; CI is never left waiting on it.

(pytest-timeout alone could not stop a test hung on uvloop: its SIGALRM handler's failure is
swallowed by uvloop's signal callback, and a whole CI run once stalled that way.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFTEST = HERE.parent / "conftest.py"

INI = """\
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
asyncio_default_test_loop_scope = function
timeout = 2
"""

HUNG = """\
import asyncio
import time


async def test_hung_on_a_future_nobody_sets():
    await asyncio.get_running_loop().create_future()


def test_hung_in_a_blocking_call():
    time.sleep(60)


async def test_next():
    await asyncio.sleep(0)
"""


def run_suite(tmp_path: Path, test_text: str) -> subprocess.CompletedProcess[str]:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_hung.py").write_text(test_text)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rf", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
        env={**os.environ, "COLUMNS": "300"},  # (the summary lines whole)
    )


def test_a_hung_test_fails_on_every_loop_and_the_run_goes_on(tmp_path: Path) -> None:
    done = run_suite(tmp_path, HUNG)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "3 failed, 2 passed" in out, out
    # On uvloop the loop watchdog fails it, saying so, with the stack of the hung task.
    assert "test_hung_on_a_future_nobody_sets[uvloop] - Failed: timed out" in out, out
    assert "the test ran past 2 s; its loop's tasks:" in out, out
    assert 'test_hung.py", line 6, in test_hung_on_a_future_nobody_sets' in out, out
    assert "test_hung_on_a_future_nobody_sets[asyncio] - Failed: Timeout" in out, out
    assert "test_hung_in_a_blocking_call - Failed: Timeout" in out, out


def test_a_test_that_blocks_every_timeout_ends_the_run_with_every_threads_stack(
    tmp_path: Path,
) -> None:
    # SIGALRM blocked and the loop never reached again: only faulthandler is left, and it ends
    # the run after 2 x the limit and a minute (the minute cut to a second here).
    blocked = """\
import signal
import time


def test_deaf_to_every_signal():
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
    time.sleep(60)
"""
    conftest = CONFTEST.read_text().replace("_HARD_STOP_EXTRA_S = 60.0", "_HARD_STOP_EXTRA_S = 1.0")
    assert conftest != CONFTEST.read_text()
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_hung.py").write_text(blocked)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode != 0
    # The dump reaches the real stderr (not the test's capture, lost with the process).
    assert "Timeout (0:00:05)!" in done.stderr, done.stderr
    assert 'test_hung.py", line 7 in test_deaf_to_every_signal' in done.stderr, done.stderr
