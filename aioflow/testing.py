"""Test doubles for pipelines: scripted sources and recording blocks.

Use them to test your own blocks the way aioflow tests itself::

    from aioflow.testing import ScriptedSource, Recorder

    source = ScriptedSource(range(10), fail_at=5, error=OSError("camera unplugged"))
    recorder = Recorder()
    pipe = af.Pipeline(my_block, recorder)
    ...
    assert recorder.setup_calls == recorder.teardown_calls == 1
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from .block import Block

__all__ = ["Recorder", "ScriptedSource"]


class ScriptedSource:
    """An async iterable that yields ``items`` and misbehaves on cue.

    Args:
        items: what to yield, in order.
        delay: seconds to sleep before each item (a paced, "live" source).
        pauses: ``{index: seconds}``: sleep that long before yielding item ``index``.
        fail_at: raise ``error`` instead of yielding item ``index``.
        error: the exception raised at ``fail_at`` (default ``RuntimeError``).
        gate: ``{index: event}``: wait for the event before yielding item ``index``.

    ``yielded`` counts what was yielded so far, across iterations; ``finished`` tells whether
    the last iteration reached the end.

    >>> src = ScriptedSource([1, 2, 3], fail_at=2)
    """

    def __init__(
        self,
        items: Iterable[Any],
        *,
        delay: float = 0.0,
        pauses: Mapping[int, float] | None = None,
        fail_at: int | None = None,
        error: BaseException | None = None,
        gate: Mapping[int, asyncio.Event] | None = None,
    ) -> None:
        self.items = list(items)
        self.delay = delay
        self.pauses = dict(pauses or {})
        self.fail_at = fail_at
        self.error = error
        self.gate = dict(gate or {})
        self.yielded = 0
        self.finished = False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        self.finished = False
        for index, item in enumerate(self.items):
            if self.delay:
                await asyncio.sleep(self.delay)
            if index in self.pauses:
                await asyncio.sleep(self.pauses[index])
            if index in self.gate:
                await self.gate[index].wait()
            if index == self.fail_at:
                raise (
                    self.error
                    if self.error is not None
                    else RuntimeError(f"scripted failure at item {index}")
                )
            self.yielded += 1
            yield item
        self.finished = True


class Recorder(Block):
    """A pass-through block that records what it sees and how it was run.

    Attributes:
        items: every item it processed, in processing order.
        setup_calls / teardown_calls: how often each hook ran.
        active: how many items it is processing now; ``max_active`` the most at once.

    Args:
        delay: seconds to sleep in ``process`` (to make a slow stage).
        **options: block options (``name=``, ``workers=``...).
    """

    def __init__(self, *, delay: float = 0.0, **options: Any) -> None:
        options.setdefault("name", "recorder")
        super().__init__(**options)
        self.delay = delay
        self.items: list[Any] = []
        self.setup_calls = 0
        self.teardown_calls = 0
        self.active = 0
        self.max_active = 0

    async def setup(self) -> None:
        self.setup_calls += 1

    async def process(self, item: Any) -> Any:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            self.items.append(item)
            return item
        finally:
            self.active -= 1

    async def teardown(self) -> None:
        self.teardown_calls += 1
