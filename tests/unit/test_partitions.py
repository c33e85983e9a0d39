"""The partition of a key: the same in every process, whatever its hash seed."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

import aioflow as af
from aioflow.transport.partitions import Router, partition_of

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


def test_a_leaky_keyed_block_across_workers_warns_that_it_waits_instead_of_dropping(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @af.block(key=lambda x: x % 2, queue_size=4, overflow="drop_oldest")
    async def track(x: int) -> int:
        return x

    @af.block(key=lambda x: x % 2)
    async def count(x: int) -> int:
        return x

    with caplog.at_level(logging.WARNING, logger="aioflow.worker"):
        Router(count, "p:in:count", 4, lambda stream, cap: object())  # type: ignore[arg-type,return-value]
        assert not caplog.records
        Router(track, "p:in:track", 4, lambda stream, cap: object())  # type: ignore[arg-type,return-value]
    (record,) = caplog.records
    assert "'track'" in record.getMessage()
    assert "drop_oldest" in record.getMessage()
    assert "waits" in record.getMessage()
