"""Sources, sinks and service calls at the edges of a pipeline (``aioflow.io.http``, ...).

Each module is imported on its own (``from aioflow.io import http``); this package imports none
of them, so ``import aioflow.io`` needs no optional dependency.
"""
