"""Control items: signals that travel through a pipeline in order with the data.

A source may yield an :class:`EndOfKey` among its items to say that one key (a camera, a stream)
has ended while the others go on: ``video_source`` does when a stream is removed with
``source.remove(name)``. It is not an item: no block's function is called with it, the
statistics do not count it, and ``run()``/``stream()`` never return it. It goes through every
block in order behind the items that came before it, and a keyed block that holds state for
``key`` drops that state once the key's earlier items are done, calling its ``evict(key,
state)`` hook and emitting what that returns, exactly where the key's last outputs left.

>>> import aioflow as af
>>> class Count(af.Block):
...     key = staticmethod(lambda item: item[0])
...     def create_state(self, camera):
...         return [0]
...     async def process(self, item, state):
...         state[0] += 1
...     async def evict(self, camera, state):
...         return [(camera, state[0])]
>>> items = [("gate", 1), ("gate", 2), af.EndOfKey("gate"), ("hall", 1)]
>>> af.run(af.Pipeline(Count()).run(items))
[None, None, ('gate', 2), None, ('hall', 1)]
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from .wire import register

__all__ = ["EndOfKey"]


@dataclass(frozen=True, slots=True)
class EndOfKey:
    """The end of one key's items: keyed blocks evict the state they hold for ``key``.

    Yield it from a pipeline's source after the key's last item. Each keyed block compares
    ``key`` with the keys its ``key=`` function returns: ``video_source`` sends the stream id
    (``Frame.stream``), so a block keyed by ``lambda frame: frame.stream`` (or by anything that
    returns the stream id, such as ``det.camera`` set from it) is evicted. A block whose keys
    are something else never holds ``key`` and lets the marker pass. A key that comes back
    later starts from a new state.

    Attributes:
        key: the key that ended (hashable; for ``video_source``, the stream id).
    """

    key: Hashable

    def __post_init__(self) -> None:
        try:
            hash(self.key)
        except TypeError:
            msg = f"EndOfKey: the key must be hashable, got {self.key!r}"
            raise TypeError(msg) from None


# It crosses Redis edges too (the workers of a distributed pipeline evict as well).
register(EndOfKey, tag="aioflow.control:EndOfKey")
