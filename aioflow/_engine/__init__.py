"""The engine's machinery: how a pipeline runs. Nothing here is public API.

The public surface (``aioflow/__init__.py`` and the modules it re-exports) builds pipelines and
describes them; these modules run them: the supervisor (:mod:`.supervisor`) owns a run's tasks,
one runtime per block (:mod:`.runner`, :mod:`.batched`, :mod:`.pulling`, :mod:`.branching`)
reads its input edge (:mod:`.channel`) and writes its output, in order (:mod:`.ordering`), with
items wrapped in envelopes (:mod:`.envelope`); thread and process executors live in
:mod:`.executors` and :mod:`.processes` (numpy arrays cross in shared memory: :mod:`.shm`).
"""
