"""The local launcher: results in rank order, and every way a rank can fail raises instead of hanging."""

import os
import time

import pytest
import torch
import torch.distributed as dist

from llmlab.train.spawn import WorkerError, spawn


def _sum_of_ranks(rank: int, world_size: int, scale: float) -> dict:
    t = torch.tensor([float(rank + 1)]) * scale
    dist.all_reduce(t)
    return {"rank": rank, "world": world_size, "sum": t}


def _raise_on_one(rank: int, world_size: int) -> None:
    if rank == 1:
        raise ValueError("planted failure on rank one")
    dist.barrier()  # rank 0 waits for a rank that will never come


def _exit_on_one(rank: int, world_size: int) -> None:
    if rank == 1:
        os._exit(3)
    dist.barrier()


def _sleep(rank: int, world_size: int) -> None:
    time.sleep(120)


def test_results_in_rank_order_with_a_collective():
    out = spawn(_sum_of_ranks, 2, 0.5, timeout=60)
    assert [r["rank"] for r in out] == [0, 1] and all(r["world"] == 2 for r in out)
    expected = torch.tensor([0.5 * (1 + 2)])
    for r in out:  # tensors come back by value, after the processes are gone
        torch.testing.assert_close(r["sum"], expected)


def test_a_raising_rank_raises_with_its_traceback():
    t0 = time.monotonic()
    with pytest.raises(WorkerError) as info:
        spawn(_raise_on_one, 2, timeout=60)
    assert info.value.rank == 1
    assert "planted failure on rank one" in info.value.details and "Traceback" in info.value.details
    assert time.monotonic() - t0 < 30  # rank 0, stuck in its barrier, was killed rather than waited for


def test_a_rank_that_dies_silently_raises_with_its_exit_code():
    with pytest.raises(WorkerError, match="code 3") as info:
        spawn(_exit_on_one, 2, timeout=60)
    assert info.value.rank == 1


def test_timeout_kills_every_rank():
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="still running"):
        spawn(_sleep, 2, timeout=2)
    assert time.monotonic() - t0 < 20


def test_bad_arguments():
    with pytest.raises(ValueError, match="world_size"):
        spawn(_sleep, 0)
    with pytest.raises(ValueError, match="timeout"):
        spawn(_sleep, 2, timeout=0)
