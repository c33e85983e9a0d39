"""End to end: ``examples/distributed/run.py``, the flagship's models in worker processes.

The command runs a short generated clip through real workers (``python -m aioflow worker``) over
a real Redis server and must print the flagship's report with its accuracy line; however it
ends, neither a worker nor the server it started may be left running.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# These run the example applications as subprocesses: 20-40 s each on a quiet 2-core machine,
# several times that on a loaded one. The suite's 60 s hang guard would fail them there.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]
COMMAND = [sys.executable, str(ROOT / "examples" / "distributed" / "run.py")]


def env() -> dict[str, str]:
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"}


def pids(output: str, what: str) -> list[int]:
    return [int(pid) for pid in re.findall(rf"^{what} .*\(pid (\d+)\)$", output, re.M)]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0): it is gone when its state says so.
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split(")")[-1].split()[0] == "Z"


def test_distributed_example_reads_the_plates(tmp_path: Path, redis_url: str) -> None:
    done = subprocess.run(
        [*COMMAND, "--redis", redis_url, "--cameras", "1", "--seconds", "3", "--out",
         str(tmp_path)],
        env=env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    output = done.stdout
    assert done.returncode == 0, output + done.stderr
    assert re.search(r"^30 frames in [\d.]+ s: [\d.]+ frames/s$", output, re.M), output
    # The remote blocks' books came back from the workers: every frame went through them.
    assert re.search(r"^detect +30 +30 ", output, re.M), output
    assert re.search(r"^regroup +\d+ +30 ", output, re.M), output
    match = re.search(r"^accuracy: (\d+)/(\d+) plates read correctly", output, re.M)
    assert match, output
    assert int(match[2]) >= 1, output  # the clip shows a plate
    assert match[1] == match[2], output  # and it was read
    workers = pids(output, "worker")
    assert len(workers) == 2, output
    assert all(gone(pid) for pid in workers), output
    assert "redis-server on" not in output  # it used the given server
    assert (tmp_path / "annotated" / "cam0.mp4").stat().st_size > 0


def test_distributed_example_stops_its_workers_and_server_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*COMMAND, "--cameras", "1", "--seconds", "20", "--out", str(tmp_path)],
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.endswith("workers ready\n"):
                proc.send_signal(signal.SIGTERM)  # in the middle of the run
                break
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines) + rest
    assert proc.returncode == 128 + signal.SIGTERM, output
    started = pids(output, "worker") + pids(output, "redis-server")
    assert len(started) == 3, output
    assert all(gone(pid) for pid in started), output
    assert "accuracy:" not in output
