"""``python -m aioflow``: graph, run, worker, bench, as a user calls them."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aioflow.cli import build_parser

REPO_ROOT = Path(__file__).resolve().parents[2]

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
numbers = [1, 2, 3]
sampled = af.Pipeline(
    af.every(double.with_options(name="d2"), n=4, key=lambda x: x % 2), name="sampled"
)

def make():
    return af.Pipeline(af.block(name="inc")(lambda x: x + 1), name="made")
"""

BROKEN = """
import aioflow as af
raise RuntimeError("the user's own module is broken")
"""

IMPORTS_MISSING = """
import aioflow as af
import no_such_dependency_xyz
pipe = None
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


def test_graph_shows_an_every_stage_with_its_rate_and_the_stage_it_wraps(project: Path) -> None:
    done = aioflow(project, "graph", "mypipe:sampled")
    assert done.returncode == 0, done.stderr
    assert "every 'every(d2)' (n=4, keyed, queue_size=64)" in done.stdout
    assert "    d2: coroutine on async, workers=2" in done.stdout


def test_run_streams_json_lines_through_the_pipeline(project: Path) -> None:
    done = aioflow(project, "run", "mypipe:pipe", stdin="1\n2\n\n9\n3\n")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [3, 5, 7]
    assert "check: received 4, emitted 3, dropped 0, skipped 1" in done.stderr


def one_line_usage_error(done: subprocess.CompletedProcess[str]) -> str:
    """The run ended with exit status 2 and one line on stderr, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_a_target_that_is_not_a_pipeline_is_refused(project: Path) -> None:
    line = one_line_usage_error(aioflow(project, "graph", "mypipe:double"))
    assert "not an aioflow Pipeline" in line


@pytest.mark.parametrize("command", ["graph", "run"])
def test_a_module_that_does_not_exist_is_one_line(project: Path, command: str) -> None:
    line = one_line_usage_error(aioflow(project, command, "nosuchmodule:pipe"))
    assert "no module named 'nosuchmodule'" in line
    assert str(project) in line  # where it looked


def test_a_name_that_does_not_exist_is_one_line_listing_the_pipelines(project: Path) -> None:
    line = one_line_usage_error(aioflow(project, "graph", "mypipe:pipeline"))
    assert "module 'mypipe' has no 'pipeline'" in line
    assert "pipelines there: pipe" in line


@pytest.mark.parametrize("target", ["mypipe.py:pipe", "./mypipe.py:pipe", "pkg/mypipe:pipe"])
def test_a_file_path_given_as_a_module_is_one_line_naming_the_module(
    project: Path, target: str
) -> None:
    line = one_line_usage_error(aioflow(project, "graph", target))
    assert "is a file path" in line
    assert ("pkg.mypipe:pipe" if "pkg" in target else "mypipe:pipe") in line


def test_a_target_without_a_colon_is_one_line(project: Path) -> None:
    line = one_line_usage_error(aioflow(project, "graph", "mypipe"))
    assert "expected MODULE:PIPELINE" in line
    assert "examples.quickstart:pipe" in line


def test_a_missing_input_file_is_one_line(project: Path) -> None:
    line = one_line_usage_error(aioflow(project, "run", "mypipe:pipe", "--input", "nope.jsonl"))
    assert "--input nope.jsonl: no such file" in line


def test_a_missing_video_file_is_one_line(project: Path) -> None:
    line = one_line_usage_error(aioflow(project, "run", "mypipe:pipe", "--video", "nope.mp4"))
    assert "--video nope.mp4: no such file or folder" in line


def test_bad_json_on_stdin_names_the_line(project: Path) -> None:
    done = aioflow(project, "run", "mypipe:pipe", stdin="1\n2\n{oops\n4\n")
    line = one_line_usage_error(done)
    assert "stdin line 3: not JSON" in line


def test_bad_json_in_an_input_file_names_the_file_and_line(project: Path) -> None:
    (project / "items.jsonl").write_text("1\n\n[1,\n")
    line = one_line_usage_error(aioflow(project, "run", "mypipe:pipe", "--input", "items.jsonl"))
    assert "items.jsonl line 3: not JSON" in line


def test_items_that_are_not_iterable_are_one_line(project: Path) -> None:
    line = one_line_usage_error(aioflow(project, "run", "mypipe:pipe", "--items", "mypipe:pipe"))
    assert "not an iterable of items" in line


def test_an_exception_in_the_users_module_keeps_its_traceback(project: Path) -> None:
    (project / "broken.py").write_text(BROKEN)
    done = aioflow(project, "graph", "broken:pipe")
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert 'broken.py", line 3' in done.stderr
    assert "RuntimeError: the user's own module is broken" in done.stderr


def test_a_missing_import_inside_the_users_module_keeps_its_traceback(project: Path) -> None:
    (project / "needs.py").write_text(IMPORTS_MISSING)
    done = aioflow(project, "graph", "needs:pipe")
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert "No module named 'no_such_dependency_xyz'" in done.stderr


def test_a_pipeline_factory_is_called(project: Path) -> None:
    done = aioflow(project, "graph", "mypipe:make")
    assert done.returncode == 0, done.stderr
    assert "pipeline 'made': inc" in done.stdout


def test_run_over_items_from_a_module(project: Path) -> None:
    done = aioflow(project, "run", "mypipe:pipe", "--items", "mypipe:numbers")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [3, 5, 7]
    assert "bottleneck: " in done.stderr


def test_run_reads_an_input_file(project: Path) -> None:
    (project / "items.jsonl").write_text("1\n2\n")
    done = aioflow(project, "run", "mypipe:pipe", "--input", "items.jsonl")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "5"]


def test_the_progress_line_shows_items_and_rate(project: Path) -> None:
    (project / "slow.py").write_text(
        "import asyncio, aioflow as af\n"
        "@af.block\n"
        "async def slow(x):\n"
        "    await asyncio.sleep(0.01)\n"
        "    return x\n"
        "pipe = af.Pipeline(slow, name='slow')\n"
        "items = list(range(60))\n"
    )
    done = aioflow(project, "run", "slow:pipe", "--items", "slow:items", "--progress")
    assert done.returncode == 0, done.stderr
    assert "/60" in done.stderr
    assert "items/s" in done.stderr
    assert "busiest: slow" in done.stderr
    assert len(done.stdout.split()) == 60


STOPPABLE = """
import asyncio
import os
from pathlib import Path

import aioflow as af

class Counter(af.Block):
    async def setup(self):
        self.seen = 0

    async def process(self, x):
        await asyncio.sleep(0.002)
        self.seen += 1
        return x

    async def teardown(self):
        Path("teardown.txt").write_text(str(self.seen))

@af.block(executor="process")
def minus(x):
    return x - 1

pipe = af.Pipeline(Counter(), minus, name="stoppable")
items = range(1_000_000)
"""


def test_sigterm_cancels_the_run_so_its_blocks_are_torn_down(project: Path) -> None:
    # A service manager's stop (SIGTERM) cancels the run as Ctrl-C does: the blocks whose
    # setup completed are torn down, the process workers exit without a traceback, and the
    # command says so and exits 143. Before, SIGTERM killed the process: no teardown ran.
    (project / "stoppable.py").write_text(STOPPABLE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "aioflow", "run", "stoppable:pipe", "--items", "stoppable:items"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the run is under way
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert first.strip() == "-1"
    assert proc.returncode == 143, err
    assert "aioflow run: terminated (SIGTERM)" in err
    assert "Traceback" not in err
    outputs = 1 + len(rest.split())
    assert 0 < outputs < 1_000_000
    # Teardown saw every item it took: those handed on, and any still in the process block.
    assert int((project / "teardown.txt").read_text()) >= outputs


def test_run_with_dashboard_prints_where_it_serves(project: Path) -> None:
    done = aioflow(project, "run", "mypipe:pipe", "--items", "mypipe:numbers", "--dashboard")
    assert done.returncode == 0, done.stderr
    assert "metrics: http://127.0.0.1:" in done.stderr
    assert "/metrics  dashboard: http://127.0.0.1:" in done.stderr


def test_a_bad_metrics_address_is_refused(project: Path) -> None:
    done = aioflow(project, "run", "mypipe:pipe", "--metrics", "nowhere")
    assert done.returncode == 2
    assert "expected HOST:PORT" in done.stderr


def test_graph_draws_mermaid_and_dot(project: Path) -> None:
    mermaid = aioflow(project, "graph", "mypipe:pipe", "--format", "mermaid")
    assert mermaid.returncode == 0, mermaid.stderr
    assert mermaid.stdout.startswith("flowchart LR\n")
    assert '["double<br/>async x2"]' in mermaid.stdout
    assert mermaid.stdout.count("-->") == 3  # source -> double -> check -> outputs
    dot = aioflow(project, "graph", "mypipe:pipe", "--format", "dot")
    assert dot.returncode == 0, dot.stderr
    assert dot.stdout.startswith('digraph "demo" {')
    assert '[label="check\\nthread x1", shape=box];' in dot.stdout
    assert dot.stdout.count("->") == 3


def test_the_console_script_entry_point_finds_modules_in_the_current_folder(
    project: Path,
) -> None:
    # -P: like an installed console script, Python does not put the current folder on the path
    done = subprocess.run(
        [
            sys.executable,
            "-P",
            "-c",
            "import sys; from aioflow.cli import main; sys.exit(main())",
            "graph",
            "mypipe:pipe",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "pipeline 'demo'" in done.stdout


def test_pyproject_declares_the_console_script() -> None:
    text = (REPO_ROOT / "pyproject.toml").read_text()
    assert '[project.scripts]\naioflow = "aioflow.cli:main"' in text


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_command_has_an_example_and_help_for_every_option() -> None:
    parser = build_parser()
    commands = _subparsers(parser)
    assert set(commands) >= {"run", "graph", "bench", "worker"}
    for name, sub in commands.items():
        text = sub.format_help()
        assert "example" in text, name
        assert f"aioflow {name}" in text, name
        # no reST markup in a terminal
        assert "``" not in text, name
        assert ":class:" not in text, name
        for action in sub._actions:
            assert action.help, (name, action.dest)
    assert "example" in parser.format_help()


def test_the_examples_load_as_their_docs_say() -> None:
    graph = aioflow(REPO_ROOT, "graph", "examples.quickstart:pipe")
    assert graph.returncode == 0, graph.stderr
    assert "fetch >> blur >> motion >> alert" in graph.stdout
    service = aioflow(REPO_ROOT, "graph", "examples.service:pipeline")
    assert service.returncode == 0, service.stderr
    assert "classify" in service.stdout
    run = aioflow(
        REPO_ROOT, "run", "examples.quickstart:pipe", "--items", "examples.quickstart:refs"
    )
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 12  # the motion alerts
    assert "bottleneck: 'fetch' limits throughput" in run.stderr
    assert "end to end: 12 outputs, mean " in run.stderr


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


def test_the_flagship_diagram_in_the_docs_is_what_graph_draws() -> None:
    # docs/gates.md shows the flagship's graph as the CLI renders it; a change to the pipeline
    # that leaves the page behind fails here.
    root = Path(__file__).resolve().parents[2]
    done = aioflow(root, "graph", "examples.gates.app:pipeline", "--format", "mermaid")
    assert done.returncode == 0, done.stderr
    page = (root / "docs" / "gates.md").read_text(encoding="utf-8")
    drawn = page.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert drawn.strip() == done.stdout.strip()
    assert "track" in drawn
    assert "recognize" in drawn
