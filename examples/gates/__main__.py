"""``python -m examples.gates``: the same as ``python examples/gates/run.py``."""

from examples.gates.run import cli

raise SystemExit(cli(prog="python -m examples.gates"))
