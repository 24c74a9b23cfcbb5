"""Tensor-parallel MLP: equal to the whole MLP forward and backward, with the collectives Megatron uses."""

from types import SimpleNamespace

import pytest
import torch

from llmlab.train.sharded import ColumnParallelLinear, mlp_equivalence
from llmlab.train.spawn import spawn

N, C, HIDDEN = 8, 16, 64


def _all_modes(rank: int, world: int) -> dict:
    return {(sp, impl): mlp_equivalence(rank, world, N, C, HIDDEN, sp, impl)
            for sp in (False, True) for impl in ("torch", "ring")}


def test_sharded_mlp_equals_the_whole_one():
    for rank_result in spawn(_all_modes, 2, timeout=120):
        for (sequence_parallel, impl), r in rank_result.items():
            assert max(r["diffs"].values()) < 1e-5, (sequence_parallel, impl, r["diffs"])
            ops = [rec["op"] for rec in r["records"]]
            activation_bytes = N * C * 4
            if sequence_parallel:  # gather in, scatter out; backward the same pair, swapped
                assert ops == ["all_gather", "reduce_scatter", "all_gather", "reduce_scatter"]
            else:  # g forward, f backward
                assert ops == ["all_reduce", "all_reduce"]
            for rec in r["records"]:
                assert rec["nbytes"] == activation_bytes and rec["sent"] == rec["formula"]
            # sequence parallelism sends the same bytes as the all-reduces it replaces
            assert sum(rec["sent"] for rec in r["records"]) == 2 * activation_bytes


def test_uneven_split_is_refused():
    comm = SimpleNamespace(rank=0, world=3)
    with pytest.raises(ValueError, match="does not split over 3"):
        ColumnParallelLinear(torch.nn.Linear(4, 5), comm)
