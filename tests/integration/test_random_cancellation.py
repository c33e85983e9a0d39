"""Random pipelines cancelled at random moments leave nothing behind.

Hypothesis (derandomized: the same examples every run) builds pipelines mixing async, thread,
generator, batched, keyed, branch and ``af.every`` blocks and blocks with slow setup and
teardown, runs them through ``run()``, ``stream()`` or ``open()`` + ``submit()``, and cancels
the caller at a random moment: a few milliseconds in, or while a setup or a teardown runs.
After each run: it ended
within a bound, no task, thread, child process or ``/dev/shm/aioflow*`` segment of it is left,
every setup that finished had exactly one teardown, and the books balance.

Pipelines with process blocks run in a child interpreter: a run that hangs there is killed with
its whole process group instead of hanging the test session.
"""

from __future__ import annotations

import asyncio
import glob
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cancel_scenarios import IN_PROCESS, THREAD_LIFE, Scenario, run_scenario, scenarios
from hypothesis import HealthCheck, given, settings

import aioflow as af

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


@settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(scenario=scenarios(IN_PROCESS))
def test_cancelling_random_pipelines_at_random_moments_leaves_nothing(scenario: Scenario) -> None:
    run_scenario(scenario)


@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(scenario=scenarios(IN_PROCESS + THREAD_LIFE))
def test_cancelling_random_pipelines_with_thread_setups_leaves_nothing(scenario: Scenario) -> None:
    run_scenario(scenario)


# -- what the sweeps found, one case each ----------------------------------------------------


async def cancel_the_run_once(
    pipe: af.Pipeline[int, int], items: range, ready: Callable[[], bool]
) -> None:
    """Runs ``pipe`` on ``items``, cancels the run once ``ready()`` holds (10 s at most) and
    checks that the caller gets the cancellation."""
    task = asyncio.create_task(pipe.run(items))
    async with asyncio.timeout(10):
        while not ready():
            await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_teardown_under_way_when_the_run_is_cancelled_runs_to_its_end() -> None:
    log: list[str] = []

    class Camera(af.Block):
        async def process(self, item: int) -> int:
            return item

        async def teardown(self) -> None:
            log.append("teardown begins")
            await asyncio.sleep(0.05)  # releasing the camera takes a moment
            log.append("teardown ends")

    await cancel_the_run_once(af.Pipeline(Camera()), range(3), lambda: bool(log))
    assert log == ["teardown begins", "teardown ends"]


async def test_a_thread_setup_that_finishes_after_the_cancellation_is_torn_down() -> None:
    log: list[str] = []
    started = threading.Event()

    class Model(af.Block):
        def setup(self) -> None:  # type: ignore[override]
            started.set()
            time.sleep(0.05)  # loading weights: cannot be interrupted
            log.append("setup")

        def process(self, item: int) -> int:
            return item

        def teardown(self) -> None:  # type: ignore[override]
            log.append("teardown")

    await cancel_the_run_once(af.Pipeline(Model(executor="thread")), range(3), started.is_set)
    assert log == ["setup", "teardown"]


async def test_a_teardown_runs_to_its_end_through_repeated_cancellations() -> None:
    """Cancelling the caller again and again while a teardown awaits never abandons it: the
    run ends once it has."""
    log: list[str] = []

    frames = asyncio.Event()

    class Camera(af.Block):
        async def process(self, item: int) -> int:
            frames.set()
            await asyncio.sleep(0)
            return item

        async def teardown(self) -> None:
            log.append("teardown begins")
            await asyncio.sleep(0.05)
            log.append("teardown ends")

    task = asyncio.create_task(af.Pipeline(Camera()).run(itertools.count()))
    async with asyncio.timeout(10):
        await frames.wait()
        task.cancel()  # stops the run: the teardown begins
        while not log:
            await asyncio.sleep(0.001)
        for _ in range(5):  # while the teardown awaits
            task.cancel()
            await asyncio.sleep(0.002)
        with pytest.raises(asyncio.CancelledError):
            await task
    assert log == ["teardown begins", "teardown ends"]


async def test_a_teardown_failing_after_the_cancellation_is_logged_and_the_run_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The teardown runs to its end and fails there: the caller still gets its cancellation,
    and the teardown's BlockError is logged, naming the block."""
    log: list[str] = []

    class Camera(af.Block):
        async def process(self, item: int) -> int:
            return item

        async def teardown(self) -> None:
            log.append("teardown begins")
            await asyncio.sleep(0.02)
            log.append("teardown ends")
            raise OSError("the camera did not release")

    caplog.set_level(logging.ERROR)
    await cancel_the_run_once(af.Pipeline(Camera(name="camera")), range(3), lambda: bool(log))
    assert log == ["teardown begins", "teardown ends"]
    logged = [
        r for r in caplog.records if r.name == "aioflow" and "did not release" in r.getMessage()
    ]
    assert len(logged) == 1
    assert getattr(logged[0], "block", None) == "camera"
    assert isinstance(logged[0].exc_info[1], af.BlockError)  # type: ignore[index]
    assert logged[0].exc_info[1].phase == "teardown"  # type: ignore[index,union-attr]


async def test_a_thread_setup_failing_after_the_cancellation_is_logged_and_not_torn_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A plain setup that fails after the cancellation came did not complete: no teardown; its
    error is logged, and the caller gets its cancellation."""
    log: list[str] = []
    started = threading.Event()

    class Model(af.Block):
        def setup(self) -> None:  # type: ignore[override]
            started.set()
            time.sleep(0.05)
            log.append("setup fails")
            raise OSError("no weights")

        def process(self, item: int) -> int:
            return item

        def teardown(self) -> None:  # type: ignore[override]
            log.append("teardown")

    caplog.set_level(logging.ERROR)
    await cancel_the_run_once(
        af.Pipeline(Model(name="model", executor="thread")), range(3), started.is_set
    )
    assert log == ["setup fails"]
    logged = [r for r in caplog.records if r.name == "aioflow" and "no weights" in r.getMessage()]
    assert len(logged) == 1
    assert getattr(logged[0], "block", None) == "model"


#: How long the child may take for its 24 examples before it is taken for hung.
SWEEP_TIMEOUT_S = 75

#: The script the child interpreter runs: the same check over pipelines with process blocks.
PROCESS_SWEEP = """
from hypothesis import HealthCheck, given, settings

import aioflow as af
from cancel_scenarios import process_scenarios, run_scenario

@settings(max_examples={n}, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(scenario=process_scenarios())
def sweep(scenario):
    run_scenario(scenario)

if __name__ == "__main__":
    sweep()
    print("sweep passed")
"""


@pytest.mark.timeout(SWEEP_TIMEOUT_S + 60)
def test_cancelling_random_pipelines_with_process_blocks_leaves_nothing(tmp_path: Path) -> None:
    script = tmp_path / "sweep.py"
    script.write_text(PROCESS_SWEEP.format(n=24))
    prefix = f"rcp{os.getpid()}x"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]),
        "CANCEL_SWEEP_PREFIX": prefix,
    }
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a hang is killed with its workers
    )
    try:
        out, _ = proc.communicate(timeout=SWEEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"a cancelled run with process blocks hung:\n{out[-4000:]}")
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)  # never leave the sweep running
        proc.wait()
        raise
    finally:
        # A killed sweep cannot unlink its segments: do it here, after saying so.
        leaked = glob.glob(f"/dev/shm/aioflow_{prefix}*")
        for path in leaked:
            os.unlink(path)
    assert proc.returncode == 0, out[-4000:]
    assert "sweep passed" in out
    assert leaked == []
