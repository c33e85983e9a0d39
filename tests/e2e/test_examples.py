"""The examples run end to end as a user runs them, and say what they claim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# These run the example applications as subprocesses: 20-40 s each on a quiet 2-core machine,
# several times that on a loaded one. The suite's 60 s hang guard would fail them there.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_quickstart_gives_the_sequential_loops_answer() -> None:
    done = run("examples/quickstart.py")
    assert done.returncode == 0, done.stderr
    assert "120 frames from 3 cameras, 12 motion alerts" in done.stdout
    assert "speed-up" in done.stdout


def test_service_selftest_answers_every_request_and_drains_on_shutdown() -> None:
    done = run("examples/service.py", "--selftest")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wrong answers: 0" in done.stdout
    assert "shutdown with 100 requests in flight: 100 answered correctly" in done.stdout
    assert "selftest passed" in done.stdout
