"""The ``aioflow`` logger: quiet by default; INFO at start and stop, DEBUG per block, and every
record about a block carries its name (``extra``), so JSON log handlers can use it."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import pytest

import aioflow as af


@af.block(workers=2)
def double(x: int) -> int:
    return 2 * x


@af.block(on_error="skip")
async def picky(x: int) -> int:
    if x == 4:
        raise ValueError("no fours")
    return x


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "aioflow"]


async def test_info_says_when_a_pipeline_starts_and_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aioflow")
    pipe = af.Pipeline(double, picky, name="books")
    assert await pipe.run(range(5)) == [0, 2, 6, 8]
    infos = [r for r in records(caplog) if r.levelno == logging.INFO]
    start, stop = infos[0], infos[-1]
    assert start.getMessage() == (
        "pipeline 'books': starting 2 blocks: double (thread x2), picky (async x1)"
    )
    assert stop.getMessage().startswith("pipeline 'books': finished after ")
    assert "5 items in, 4 out, 0 dropped, 1 skipped, 0 failed" in stop.getMessage()
    assert start.pipeline == stop.pipeline == "books"  # type: ignore[attr-defined]


async def test_a_failed_and_a_cancelled_run_say_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aioflow")

    @af.block
    async def breaks(x: int) -> int:
        raise RuntimeError("broken")

    with pytest.raises(ExceptionGroup):
        await af.Pipeline(breaks, name="broken").run([1])

    @af.block
    async def hangs(x: int) -> int:
        await asyncio.Event().wait()
        return x

    task = asyncio.create_task(af.Pipeline(hangs, name="hung").run([1]))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stops = [r.getMessage() for r in records(caplog) if "after" in r.getMessage()]
    assert stops[0].startswith("pipeline 'broken': failed after ")
    assert "1 failed" in stops[0]
    assert stops[1].startswith("pipeline 'hung': cancelled after ")


async def test_debug_tells_each_blocks_lifecycle_with_its_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioflow")
    await af.Pipeline(double, picky, name="life").run(range(5))
    for name in ("double", "picky"):
        mine = [r.getMessage() for r in records(caplog) if getattr(r, "block", None) == name]
        assert mine[0].startswith(f"block {name!r}: starting")
        assert f"block {name!r}: set up, taking items" in mine
        assert mine[-1].startswith(f"block {name!r}: end of stream, torn down (received 5")


async def test_every_record_about_a_block_carries_its_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioflow")
    await af.Pipeline(double, picky, name="named").run(range(5))
    about_blocks = [r for r in records(caplog) if r.getMessage().startswith("block ")]
    assert about_blocks
    for r in about_blocks:
        assert r.getMessage().startswith(f"block {r.block!r}")  # type: ignore[attr-defined]
    [skip] = [r for r in records(caplog) if r.levelno == logging.WARNING]
    assert skip.block == "picky"  # type: ignore[attr-defined]


def test_the_library_is_quiet_by_default() -> None:
    code = (
        "import logging, aioflow as af\n"
        "assert logging.getLogger('aioflow').handlers == []\n"
        "print(af.run(af.Pipeline(lambda x: x + 1, name='quiet').run([1, 2])))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[2, 3]\n"
    assert proc.stderr == ""
