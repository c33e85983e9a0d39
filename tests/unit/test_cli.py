"""``python -m aioflow``: graph, run, worker, bench, as a user calls them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PIPELINE = """
import aioflow as af

@af.block(workers=2)
async def double(x):
    return x * 2

@af.block(on_error="skip")
def check(x):
    if x > 10:
        raise ValueError("too big")
    return x + 1

pipe = af.Pipeline(double, check, name="demo")
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "mypipe.py").write_text(PIPELINE)
    return tmp_path


def aioflow(cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aioflow", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_graph_prints_the_stages_and_their_options(project: Path) -> None:
    done = aioflow(project, "graph", "mypipe:pipe")
    assert done.returncode == 0, done.stderr
    assert "pipeline 'demo': double >> check" in done.stdout
    assert "double: coroutine on async, workers=2" in done.stdout
    assert "check: function on thread" in done.stdout
    assert "on_error='skip'" in done.stdout


def test_run_streams_json_lines_through_the_pipeline(project: Path) -> None:
    done = aioflow(project, "run", "mypipe:pipe", stdin="1\n2\n\n9\n3\n")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [3, 5, 7]
    assert "check: received 4, emitted 3, dropped 0, skipped 1" in done.stderr


def test_a_target_that_is_not_a_pipeline_is_refused(project: Path) -> None:
    done = aioflow(project, "graph", "mypipe:double")
    assert done.returncode != 0
    assert "not an aioflow Pipeline" in done.stderr


def test_worker_refuses_blocks_that_are_not_stages_of_the_pipeline(project: Path) -> None:
    done = aioflow(
        project, "worker", "mypipe:pipe", "--redis", "redis://127.0.0.1:1/0", "--blocks", "nope"
    )
    assert done.returncode == 2
    assert "['nope'] is not a stage of pipeline 'demo'" in done.stderr
    assert "['double', 'check']" in done.stderr


def test_worker_without_its_options_says_which_are_needed(project: Path) -> None:
    done = aioflow(project, "worker", "mypipe:pipe")
    assert done.returncode == 2
    assert "--redis" in done.stderr


def test_bench_measures_against_hand_written_queues(project: Path) -> None:
    done = aioflow(project, "bench", "--n", "2000", "--stages", "2", "--reps", "1")
    assert done.returncode == 0, done.stderr
    assert "K= 2: hand-written" in done.stdout
    assert "aioflow" in done.stdout
