"""The partition of a key: the same in every process, whatever its hash seed."""

from __future__ import annotations

import os
import subprocess
import sys

from aioflow.transport.partitions import partition_of

KEYS = ["cam0", "gate", ("site", 3), 17, b"raw", "é"]


def test_a_key_has_the_same_partition_in_processes_with_other_hash_seeds() -> None:
    here = [partition_of(key, 16) for key in KEYS]
    code = (
        "from aioflow.transport.partitions import partition_of;"
        f"print([partition_of(k, 16) for k in {KEYS!r}])"
    )
    for seed in ("1", "2", "3"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.strip() == repr(here)


def test_keys_spread_over_the_partitions() -> None:
    parts = {partition_of(f"cam{i}", 16) for i in range(200)}
    assert parts == set(range(16))
    assert all(0 <= partition_of(key, 5) < 5 for key in KEYS)
