"""Gate cameras: the flagship aioflow example, as a package.

``app`` builds the pipeline, ``run`` is the command line (``python examples/gates/run.py`` or
``python -m examples.gates``), ``ocr`` the PP-OCR pre- and post-processing, ``plates`` the plate
formats, ``track`` the per-camera tracker and the scoring, ``synth`` the video generator.
Importing the package loads no model and starts nothing.
"""
