"""``python -m aioflow``: see :mod:`aioflow.cli`."""

from aioflow.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
