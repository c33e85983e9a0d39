"""The flagship gate-camera pipeline spread over worker processes (Redis Streams edges).

``app`` says which blocks run where and builds the pipeline in a worker
(``python -m aioflow worker examples.distributed.app:pipeline ...``); ``run`` is the one command
that starts a Redis server and the workers, runs the caller on the demo's clips and stops them
(``python examples/distributed/run.py``). See ``docs/distributed.md``.
"""
