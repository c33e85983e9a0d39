"""The end of a caller's run for the keyed blocks that workers run.

A worker serves every caller's items for as long as it lives, so the end of one caller's stream
is not something its input shows; the caller says so (docs/distributed.md, "The end of a run").
To know which keys a run's end ends, a worker remembers, per key of a keyed block, the caller
runs whose items reached the block with that key since the key was last evicted (:class:`Touches`),
each with the path of the first such item: a local run's end of stream evicts keys in the order
it first used them, and the caller puts the flush in that order by these paths.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator
from typing import Any

__all__ = ["Touches"]


class Touches:
    """Per key: the runs that touched it since its last eviction, each with its first path."""

    def __init__(self) -> None:
        self.by_key: dict[Hashable, dict[str, list[int]]] = {}

    def touch(self, key: Hashable, run: str, path: list[int]) -> None:
        """An item of caller run ``run`` at ``path`` reached the block with ``key``."""
        runs = self.by_key.get(key)
        if runs is None:
            runs = self.by_key[key] = {}
        if run not in runs:
            runs[run] = path

    def of_run(
        self, run: str, want: Callable[[Hashable], bool] | None = None
    ) -> list[tuple[Hashable, dict[str, list[int]]]]:
        """The keys (among those ``want`` accepts) that ``run`` touched, each with every run
        that did. (A list: the keys are not hashed again, which a user's key may refuse.)"""
        return [
            (k, runs)
            for k, runs in list(self.by_key.items())
            if run in runs and (want is None or want(k))
        ]

    def others(self, run: str, want: Callable[[Hashable], bool] | None = None) -> set[str]:
        """The other runs that touched a key ``run`` touched."""
        return {r for _, runs in self.of_run(run, want) for r in runs} - {run}

    def end(
        self, run: str, gone: set[str], want: Callable[[Hashable], bool] | None = None
    ) -> list[tuple[Hashable, list[int]]]:
        """Caller run ``run`` ended: the keys (among those ``want`` accepts) that it touched
        and that no other live run (not in ``gone``) touched since their last eviction, each
        with the path of its first item of ``run``, in that order. They and ``run`` are
        forgotten: the caller of this evicts them."""
        ending: list[tuple[list[int], Hashable]] = []
        for key, runs in self.of_run(run, want):
            first = runs.pop(run)
            for other in gone & runs.keys():
                del runs[other]
            if not runs:
                self._discard(key)
                ending.append((first, key))
        ending.sort(key=lambda pair: pair[0])
        return [(key, first) for first, key in ending]

    def forget(self, want: Callable[[Hashable], bool]) -> None:
        """Drop the keys ``want`` accepts (another worker owns them now)."""
        for key in [k for k in self.by_key if want(k)]:
            self._discard(key)

    def _discard(self, key: Hashable) -> None:
        # (a user's key may refuse to be hashed or compared again: then it stays, with the
        # runs left to it, and is not ended by them: a local run cannot take it out either)
        with contextlib.suppress(Exception):
            del self.by_key[key]

    def pairs(self, want: Callable[[Hashable], bool]) -> list[list[Any]]:
        """``[key, [[run, path], ...]]`` for the keys ``want`` accepts (for a snapshot)."""
        return [
            [key, [[run, path] for run, path in runs.items()]]
            for key, runs in self.by_key.items()
            if want(key)
        ]

    def restore(self, pairs: Iterator[Any] | list[Any]) -> None:
        """Read back :meth:`pairs`."""
        for key, runs in pairs:
            self.by_key[key] = {str(run): list(path) for run, path in runs}
