"""Tensor-parallel MLP: equal to the whole MLP forward and backward, with the collectives Megatron uses."""

from types import SimpleNamespace

import pytest
import torch

from llmlab.train.sharded import ColumnParallelLinear, mlp_equivalence_modes
from llmlab.train.spawn import spawn

N, C, HIDDEN = 8, 16, 64


def test_sharded_mlp_equals_the_whole_one():
    for rank_result in spawn(mlp_equivalence_modes, 2, N, C, HIDDEN, timeout=120):
        assert len(rank_result) == 4
        for r in rank_result:
            sequence_parallel = r["sequence_parallel"]
            assert max(r["diffs"].values()) < 1e-5, r
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
