"""aioflow: asyncio-native dataflow pipelines for stateful computer-vision workloads.

>>> import aioflow as af
>>> @af.block
... async def double(x: int) -> int:
...     return 2 * x
>>> af.run((double >> (lambda x: x + 1)).run(range(3)))
[1, 3, 5]
"""

from __future__ import annotations

from .batching import Batch
from .block import Block, BlockOptions, FunctionBlock, Retry, block
from .control import EndOfKey
from .errors import (
    AioflowError,
    BlockError,
    ExecutorError,
    GraphError,
    ItemDropped,
    PipelineClosed,
    SnapshotError,
)
from .graph import Branch, branch
from .loop import run
from .pipeline import Pipeline, RunningPipeline
from .sampling import Every, Held, every
from .stats import BlockStatistics, Bottleneck, LatencyHistogram

__version__ = "0.1.0"

__all__ = (
    "AioflowError",
    "Batch",
    "Block",
    "BlockError",
    "BlockOptions",
    "BlockStatistics",
    "Bottleneck",
    "Branch",
    "EndOfKey",
    "Every",
    "ExecutorError",
    "FunctionBlock",
    "GraphError",
    "Held",
    "ItemDropped",
    "LatencyHistogram",
    "Pipeline",
    "PipelineClosed",
    "Retry",
    "RunningPipeline",
    "SnapshotError",
    "__version__",
    "block",
    "branch",
    "every",
    "run",
)
