"""End to end: the gate-camera service gives freed frames back to the system.

A service whose cameras come and go frees frames between frames that stay alive. With glibc's
own malloc settings, once one large block has been freed, frames are carved out of malloc's
heaps and a freed frame between live ones stays there as free space: RSS keeps what the frames
once took. ``run.py`` fixes the mmap threshold (``--malloc-threshold``, default 128 KiB), so
each frame has pages of its own, returned when it is freed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from examples.gates import run

# These run the example applications as subprocesses: 20-40 s each on a quiet 2-core machine,
# several times that on a loaded one. The suite's 60 s hang guard would fail them there.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import os, sys
import numpy as np
from examples.gates import run

if sys.argv[1] != "0":
    assert run.fix_malloc_threshold(int(sys.argv[1])), "not set"

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

big = np.ones(8 << 20, np.uint8)  # one large block freed: glibc's own threshold rises to it
del big
base = rss()
frames = [np.ones((360, 640, 3), np.uint8) for _ in range(100)]
del frames[::2]  # every other frame freed: 50 frames of 675 KiB stay alive
print(rss() - base)
"""

needs_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc's malloc only (mallopt)",
)


def held_mb(threshold: int) -> float:
    """MB of RSS a process holds for 50 live frames after 50 others between them were freed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(threshold)],
        cwd=ROOT,
        env=env | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return int(out.stdout.strip()) / 2**20


@needs_glibc
def test_frames_freed_between_live_ones_are_given_back_with_the_services_threshold() -> None:
    live = 50 * 360 * 640 * 3 / 2**20  # 33 MB
    fixed = held_mb(run.MALLOC_THRESHOLD)
    glibc = held_mb(0)
    assert fixed < live * 1.2, f"{fixed:.0f} MB held for {live:.0f} MB of live frames"
    # glibc's own threshold keeps the freed frames' memory too (about twice the live frames)
    assert glibc > live * 1.6, f"glibc's own threshold held only {glibc:.0f} MB"


@needs_glibc
def test_an_explicit_malloc_variable_in_the_environment_stands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "262144")
    assert run.fix_malloc_threshold(run.MALLOC_THRESHOLD) is False


@pytest.mark.parametrize("bad", ["-1", "x", "1.5", str(64 * 1024 * 1024)])
def test_a_bad_malloc_threshold_is_refused_naming_it(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run.parser().parse_args(["--malloc-threshold", bad])
    assert exit_info.value.code == 2
    assert "--malloc-threshold" in capsys.readouterr().err


def test_the_service_fixes_the_threshold_by_default_and_0_keeps_glibcs() -> None:
    assert run.parser().parse_args([]).malloc_threshold == 128 * 1024
    assert run.parser().parse_args(["--malloc-threshold", "0"]).malloc_threshold == 0
