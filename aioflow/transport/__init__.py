"""Transports: run a pipeline's blocks in other processes and machines.

:mod:`aioflow.transport.redis` (``RedisTransport``, ``pip install aioflow[redis]``) puts the
edges between segments of a pipeline on Redis Streams. This package imports none of its modules,
so ``import aioflow.transport`` needs no optional dependency.
"""
