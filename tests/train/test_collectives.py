"""Collectives: the hand ring equals torch.distributed's, sends what the formulas say, and int8 stays in bounds."""

import pytest
import torch

from llmlab.train.collectives import FORMULAS, Comm, dequantize_int8, quantize_int8
from llmlab.train.spawn import spawn


def test_quantize_int8_worked_example_and_bound():
    q, scale = quantize_int8(torch.tensor([0.5, -1.0, 0.25]))
    assert q.tolist() == [64, -127, 32] and scale.item() == pytest.approx(1 / 127)
    torch.manual_seed(0)
    x = torch.randn(6, 50) * torch.logspace(-3, 2, 6)[:, None]  # rows of very different sizes
    for per in ("tensor", "row"):
        q, scale = quantize_int8(x, per)
        assert q.dtype == torch.int8 and scale.shape == ((1, 1) if per == "tensor" else (6, 1))
        err = (x - dequantize_int8(q, scale)).abs()
        assert (err <= scale / 2 + 1e-7).all()
    # per row is far more precise on the small rows
    row_err = (x - dequantize_int8(*quantize_int8(x, "row"))).abs()[0].max()
    tensor_err = (x - dequantize_int8(*quantize_int8(x, "tensor"))).abs()[0].max()
    assert row_err < tensor_err / 100


def test_quantize_int8_zero_and_bad_mode():
    q, scale = quantize_int8(torch.zeros(2, 3), "row")
    assert (dequantize_int8(q, scale) == 0).all()
    with pytest.raises(ValueError, match="per must be"):
        quantize_int8(torch.ones(3), "column")


def test_single_process_comm_copies_and_logs_nothing():
    comm = Comm("ring")
    x = torch.arange(6.0)
    out = comm.all_reduce(x)
    assert torch.equal(out, x) and out is not x and comm.records == []
    with pytest.raises(ValueError, match="impl='ring'"):
        Comm("torch").all_reduce(x, compress="int8-row")
    with pytest.raises(ValueError, match="impl must be"):
        Comm("tree")


def _ring_checks(rank: int, world: int) -> dict:
    torch.manual_seed(10 + rank)
    out = {"equal": {}, "sent": {}}
    for numel in (12, 10):  # one that splits evenly over 3 ranks, one that does not
        x = torch.randn(numel)
        for op in ("all_reduce", "all_gather") + (("reduce_scatter",) if numel % world == 0 else ()):
            ring, ref = Comm("ring"), Comm("torch")
            a, b = getattr(ring, op)(x), getattr(ref, op)(x)
            out["equal"][op, numel] = bool(torch.allclose(a, b, atol=1e-6))
            out["sent"][op, numel] = (ring.records[0].sent, ring.records[0].formula, ring.records[0].nbytes)
    y = torch.randn(9, 40) * torch.logspace(-2, 1, 9)[:, None]
    exact = Comm("torch").all_reduce(y)
    out["int8"] = {"exact": exact, "inputs_absmax": y.abs().amax(dim=1)}
    for compress in ("int8-tensor", "int8-row"):
        comm = Comm("ring")
        out["int8"][compress] = (comm.all_reduce(y, compress=compress), comm.records[0].sent)
    # fewer rows (or values) than ranks: some chunks are empty, and nothing may wait for them
    out["tiny"] = {(shape, compress): Comm("ring").all_reduce(torch.full(shape, rank + 1.0), compress=compress)
                   for shape in ((2, 5), (2,)) for compress in ("none", "int8-tensor", "int8-row")}
    return out


def test_ring_collectives_on_three_ranks():
    results = spawn(_ring_checks, 3, timeout=120)
    for r in results:
        assert all(r["equal"].values()), r["equal"]
        for (op, numel), (sent, formula, nbytes) in r["sent"].items():
            assert formula == FORMULAS[op](nbytes, 3)
            if numel == 12:  # even chunks: the measured bytes are the formula's, exactly
                assert sent == formula
    for (shape, _), value in results[0]["tiny"].items():
        torch.testing.assert_close(value, torch.full(shape, 6.0), atol=6 / 127, rtol=0)
    # int8: every rank holds the same result, within one quantisation step per hop of the exact sum
    absmax_sum = sum(r["int8"]["inputs_absmax"] for r in results)  # bounds every partial sum, per row
    exact = results[0]["int8"]["exact"]
    for compress in ("int8-tensor", "int8-row"):
        values = [r["int8"][compress][0] for r in results]
        assert all(torch.equal(v, values[0]) for v in values)
        bound = absmax_sum[:, None] if compress == "int8-row" else absmax_sum.max()
        # p-1 reduce-scatter hops and one all-gather quantisation, each off by at most half a step
        assert ((values[0] - exact).abs() <= 3 * bound / 254 * 1.001).all()
        assert (values[0] - exact).abs().max() > 0  # it really was quantised
        sent = results[0]["int8"][compress][1]
        fp32 = FORMULAS["all_reduce"](exact.numel() * 4, 3)
        assert fp32 / 4 <= sent < fp32 / 3  # int8 payload plus a few float32 scales
