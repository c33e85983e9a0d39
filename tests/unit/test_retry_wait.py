"""A Retry-After is waited out in full on either loop, never a fraction of a millisecond less."""

from __future__ import annotations

import time

from aioflow.io.http import _sleep_at_least


async def test_the_retry_wait_never_ends_before_its_time() -> None:
    # uvloop counts timers in whole milliseconds from a clock it reads at the top of each turn:
    # a bare asyncio.sleep(0.0037) ends early a few times in 200 there (CI saw a Retry-After of
    # 1 s waited 0.9998 s). The retry wait checks the monotonic clock and sleeps the rest.
    short = []
    for _ in range(200):
        start = time.monotonic()
        await _sleep_at_least(0.0037)
        waited = time.monotonic() - start
        if waited < 0.0037:
            short.append(waited)
    assert short == []
