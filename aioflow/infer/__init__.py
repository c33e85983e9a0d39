"""Inference blocks: run models inside a pipeline.

Each backend lives in its own module and is imported only when that module is imported, so
``import aioflow`` (and ``import aioflow.infer``) never loads a runtime:

- :mod:`aioflow.infer.onnx`: :class:`~aioflow.infer.onnx.OnnxModel`, an onnxruntime session as a
  block (``pip install aioflow[onnx]``, or ``aioflow[gpu]`` for CUDA).
"""
