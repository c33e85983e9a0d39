"""What is sent to a worker process: a block or function pickled for a spawned interpreter.

Kept apart from the pool (:mod:`.processes`) so that building a pipeline can check that a process
block can be shipped (a :class:`~aioflow.errors.GraphError` before anything runs) without loading
the process machinery.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import pickle
import sys
from collections.abc import Callable
from typing import Any, Final

from ..block import Block, FunctionBlock
from ..errors import GraphError, describe

__all__ = ["OWNER_ATTRS", "ByName", "check_picklable", "ship"]

#: The Block attributes the graph and the pipeline set: they point to the pipeline, not the block.
OWNER_ATTRS: Final = ("_aioflow_owner", "_aioflow_running")


class ByName:
    """A module-level function or block, shipped by import path.

    ``@af.block def heavy(...)`` rebinds the module attribute ``heavy`` to the block, so pickle
    can no longer find the function under its own name; the worker imports the block instead and
    takes its function.
    """

    def __init__(self, module: str, qualname: str) -> None:
        self.module = module
        self.qualname = qualname

    def resolve(self) -> Any:
        obj: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        return obj.fn if isinstance(obj, FunctionBlock) else obj


def _by_name(fn: Callable[..., Any]) -> ByName | None:
    """A :class:`ByName` for ``fn`` when its module attribute is a block wrapping it."""
    ref = ByName(getattr(fn, "__module__", "") or "", getattr(fn, "__qualname__", "") or "")
    module = sys.modules.get(ref.module)
    if module is None or "<" in ref.qualname:
        return None
    found: Any = module
    for part in ref.qualname.split("."):
        found = getattr(found, part, None)
    if isinstance(found, FunctionBlock) and found.fn is fn:
        return ref
    return None


def _found(target: object) -> str:
    if inspect.isfunction(target):
        if target.__name__ == "<lambda>":
            return "a lambda"
        if "<locals>" in target.__qualname__:
            return f"function {target.__qualname__!r}, defined inside another function"
        return f"function {target.__module__}.{target.__qualname__}"
    if isinstance(target, Block):
        return f"a {type(target).__name__} instance"
    return f"a {type(target).__name__} object"


def ship(name: str, target: object) -> bytes:
    """``target`` pickled for a spawned worker, or a GraphError saying why it cannot be."""
    obj: object = target
    owner = getattr(target, "__self__", None)
    if inspect.ismethod(target) and isinstance(owner, Block):
        target = owner  # block.process: ship the block, so that setup and teardown run too
    if isinstance(target, FunctionBlock):
        obj = _by_name(target.fn) or target.fn
    elif isinstance(target, Block):
        # A shallow copy without the links to the pipeline: pickling those would drag the
        # whole pipeline (and its other blocks) into every worker.
        obj = copy.copy(target)
        state = getattr(obj, "__dict__", {})
        for attr in OWNER_ATTRS:
            state.pop(attr, None)
    elif inspect.isfunction(target):
        obj = _by_name(target) or target
    expected = (
        f"block {name!r}: executor='process' needs a module-level function or a picklable "
        "af.Block instance (a spawned worker process imports the function by name, or "
        "unpickles the block)"
    )
    # Describe what the user wrote (the function), not our wrapper around it.
    shown: object = target.fn if isinstance(target, FunctionBlock) else target
    module = obj.module if isinstance(obj, ByName) else getattr(target, "__module__", None)
    main = sys.modules.get("__main__")
    if module == "__main__" and getattr(main, "__file__", None) is None:
        msg = f"{expected}; found {_found(shown)} defined interactively in __main__"
        raise GraphError(msg)
    try:
        return pickle.dumps(obj, protocol=5)
    except Exception as exc:
        msg = f"{expected}; found {_found(shown)}, which cannot be pickled: {describe(exc)}"
        raise GraphError(msg) from exc


def check_picklable(name: str, target: object) -> None:
    """Raise :class:`~aioflow.errors.GraphError` if ``target`` cannot be sent to a spawned
    worker: a lambda, a function defined inside another function (a closure), a function
    defined interactively, or a block with an attribute that cannot be pickled."""
    ship(name, target)
