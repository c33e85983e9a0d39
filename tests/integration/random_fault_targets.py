"""What the process blocks of ``test_random_faults`` run in their worker processes.

A spawned worker imports its function by name, so these live in an importable module. The
items carry their faults: the string ``"raise"`` makes every stage fail it with a ValueError,
``"die"`` makes a worker process kill itself, ``"unpicklable_result"`` makes a worker return
what cannot be sent back.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any


def plain(x: Any) -> Any:
    """The value an item stands for: a branch's tuple and an ``af.every`` hold unwrapped."""
    while True:
        if type(x) is tuple and x:
            x = x[0]
        elif type(x).__name__ == "Held":
            x = x.item
        else:
            return x


def poke(x: Any) -> Any:
    """A process block's function: a short nap, then the item, or the fault the item asks for."""
    v = plain(x)
    if isinstance(v, str):
        if v == "raise":
            raise ValueError("process stage refuses 'raise'")
        if v == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        if v == "unpicklable_result":
            return threading.Lock()
        if v == "library_stop":
            raise LibraryStop("process stage")
    time.sleep(0.0005)
    return v


class LibraryStop(BaseException):
    """A library's own ``BaseException`` subclass (as pytest's ``Failed``), not an interrupt."""


def raise_library_stop(x: Any) -> Any:
    """A process block's function: ``LibraryStop`` for the item 3."""
    if x == 3:
        raise LibraryStop("the library gave up on 3")
    return x
