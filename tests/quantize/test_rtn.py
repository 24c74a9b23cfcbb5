"""Round-to-nearest quantisation: golden values, hand computations, error trends, INT4 packing; the lab helpers."""

import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.quantize.lab import error_stats, format_table, plot_weight_grid, quantization_error_table
from llmlab.quantize.rtn import (
    dequantize_weight,
    fake_quantize,
    pack_int4,
    pad_columns,
    qrange,
    quantize_weight,
    unpack_int4,
)


def test_golden_int4_symmetric_per_channel():
    w = torch.tensor([[0.1, -0.4, 0.2, 0.3]])
    codes, scales, zeros = quantize_weight(w, 4)
    assert zeros is None and codes.dtype == torch.int32 and scales.shape == (1, 1)
    torch.testing.assert_close(scales, torch.tensor([[0.4 / 7]]))
    assert codes.tolist() == [[2, -7, 4, 5]]  # w / s = 1.75, -7, 3.5 (half to even -> 4), 5.25
    torch.testing.assert_close(dequantize_weight(codes, scales), torch.tensor([[2, -7, 4, 5]]) * 0.4 / 7)


def test_golden_int8_asymmetric():
    w = torch.tensor([[0.0, 1.0, 2.0, 2.55]])  # all >= 0: the range is [0, 2.55], 0 stays exact
    codes, scales, zeros = quantize_weight(w, 8, symmetric=False)
    torch.testing.assert_close(scales, torch.tensor([[0.01]]))
    assert zeros.tolist() == [[0.0]] and codes.tolist() == [[0, 100, 200, 255]]
    w = torch.tensor([[-1.0, 0.0, 0.5, 2.0]])  # range [-1, 2] over 15 steps of 0.2; zero point 5
    codes, scales, zeros = quantize_weight(w, 4, symmetric=False)
    torch.testing.assert_close(scales, torch.tensor([[0.2]]))
    assert zeros.tolist() == [[5.0]] and codes.tolist() == [[0, 5, 7, 15]]  # 0.5 / 0.2 = 2.5 -> 2, + 5
    torch.testing.assert_close(dequantize_weight(codes, scales, zeros), torch.tensor([[-1.0, 0.0, 0.4, 2.0]]))


def test_granularities_match_a_hand_computation():
    torch.manual_seed(0)
    w = torch.randn(3, 8)
    for bits in (4, 8):
        qmax = 2 ** (bits - 1) - 1
        # per tensor: one absmax
        codes, scales, _ = quantize_weight(w, bits, per_tensor=True)
        s = w.abs().max() / qmax
        assert scales.shape == (3, 1) and torch.allclose(scales, s.expand(3, 1))
        assert torch.equal(codes, torch.round(w / s).int())
        # per output channel: one absmax per row
        codes, scales, _ = quantize_weight(w, bits)
        s = w.abs().amax(1, keepdim=True) / qmax
        torch.testing.assert_close(scales, s)
        assert torch.equal(codes, torch.round(w / s).int())
        # groups of 4 columns: two scales per row
        codes, scales, _ = quantize_weight(w, bits, group_size=4)
        s = torch.stack([w[:, :4].abs().amax(1), w[:, 4:].abs().amax(1)], 1) / qmax  # (3, 2)
        torch.testing.assert_close(scales, s)
        assert torch.equal(codes, torch.round(w / s.repeat_interleave(4, 1)).int())
        torch.testing.assert_close(dequantize_weight(codes, scales), codes * s.repeat_interleave(4, 1))


def test_error_falls_with_smaller_groups_and_more_bits():
    torch.manual_seed(0)
    w = torch.randn(64, 512) * torch.rand(64, 512).pow(4) * 3  # heavy-tailed, like trained weights
    def err(**kw):
        return (fake_quantize(w, **kw) - w).pow(2).mean().item()
    for bits in (4, 8):
        by_group = [err(bits=bits, per_tensor=True), err(bits=bits), err(bits=bits, group_size=256),
                    err(bits=bits, group_size=128), err(bits=bits, group_size=64), err(bits=bits, group_size=32)]
        assert all(a > b for a, b in zip(by_group, by_group[1:], strict=False)), by_group
    by_bits = [err(bits=b, group_size=64) for b in (2, 3, 4, 6, 8)]
    assert all(a > b for a, b in zip(by_bits, by_bits[1:], strict=False)), by_bits
    assert err(bits=4, group_size=64, symmetric=False) < err(bits=4, group_size=64)  # one more level, fitted range


def test_codes_stay_in_range_and_zero_is_exact():
    torch.manual_seed(1)
    w = torch.randn(16, 64)
    w[0] = 0.0  # an all-zero row must not divide by zero
    for bits in (4, 8):
        for symmetric in (True, False):
            codes, scales, zeros = quantize_weight(w, bits, group_size=32, symmetric=symmetric)
            qmin, qmax = qrange(bits, symmetric)
            assert int(codes.min()) >= qmin and int(codes.max()) <= qmax
            back = dequantize_weight(codes, scales, zeros)
            assert torch.equal(back[0], torch.zeros(64)) and torch.isfinite(back).all()
            step = scales.repeat_interleave(32, 1)
            assert bool(((back - w).abs() <= step / 2 + 1e-6).all())  # never clipped: within half a step


def test_user_errors():
    w = torch.randn(4, 96)
    with pytest.raises(UserError, match="group_size 64 does not divide the input width 96"):
        quantize_weight(w, 4, group_size=64)
    with pytest.raises(UserError, match="bits"):
        quantize_weight(w, 16)
    with pytest.raises(UserError, match="bits"):
        quantize_weight(w, 1)
    with pytest.raises(UserError, match="per_tensor"):
        quantize_weight(w, 8, group_size=32, per_tensor=True)
    with pytest.raises(UserError, match="group_size must be"):
        quantize_weight(w, 8, group_size=0)
    # the padding rule: pad, quantise, cut; padding never changes the real columns' groups' scales
    codes, scales, _ = quantize_weight(pad_columns(w, 64), 4, group_size=64)
    assert codes.shape == (4, 128) and scales.shape == (4, 2) and bool((codes[:, 96:] == 0).all())


def test_pack_int4_layout_and_round_trip():
    assert pack_int4(torch.tensor([[1, 2, 15, 0]])).tolist() == [[0x12, 0xF0]]
    u = torch.randint(0, 16, (5, 64), generator=torch.Generator().manual_seed(0))
    packed = pack_int4(u)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 32)
    assert torch.equal(unpack_int4(packed).long(), u)
    with pytest.raises(ValueError, match="0..15"):
        pack_int4(torch.tensor([[-1, 3]]))
    with pytest.raises(ValueError, match="odd"):
        pack_int4(torch.tensor([[1, 2, 3]]))


def test_error_table_and_plot(tmp_path):
    torch.manual_seed(0)
    w = torch.randn(48, 320)  # 320 is not a multiple of 128 or 256: those groups are padded
    rows = quantization_error_table(w)
    by = {(r["bits"], r["scheme"], r["symmetric"]): r for r in rows}
    assert by[(8, "channel", True)]["sqnr_db"] > by[(4, "channel", True)]["sqnr_db"] + 20  # ~6 dB per bit
    rel_fro = [by[(4, scheme, True)]["rel_fro"] for scheme in ("group 32", "group 128", "tensor")]
    assert rel_fro == sorted(rel_fro)
    assert by[(4, "group 32", True)]["bits_per_weight"] == pytest.approx(4 + 32 / 32)
    assert error_stats(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 3.0]))["rel_fro"] == pytest.approx(0.2)
    assert "sqnr_dB" in format_table(rows) and len(format_table(rows).splitlines()) == len(rows) + 1
    for symmetric in (True, False):
        path = tmp_path / f"grid_{symmetric}.png"
        plot_weight_grid(w, 4, 128, symmetric, path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))
