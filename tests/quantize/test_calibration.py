"""Calibration windows from text sources; per-linear input statistics against direct computation;
block-by-block running reproduces the whole model."""

import json

import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.data.sources import is_validation
from llmlab.models import Transformer, get_preset
from llmlab.quantize.calibration import (
    InputCollector,
    calibration_batches,
    collect_block_stats,
    collect_model_stats,
    for_each_block,
    input_groups,
)


class ByteTokenizer:
    """One token per UTF-8 byte; enough to cut windows."""

    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))


def docs(n: int = 40, size: int = 300) -> list[tuple[str, str]]:
    return [(f"doc{i}", chr(ord("a") + i % 26) * size) for i in range(n)]


def test_windows_shapes_and_seed():
    batches = calibration_batches(ByteTokenizer(), docs(), n=10, seq_len=64, batch_size=4)
    assert [tuple(b.shape) for b in batches] == [(4, 64), (4, 64), (2, 64)]
    again = calibration_batches(ByteTokenizer(), docs(), n=10, seq_len=64, batch_size=4)
    other = calibration_batches(ByteTokenizer(), docs(), n=10, seq_len=64, batch_size=4, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    assert not torch.equal(batches[0], other[0])
    assert (torch.cat(batches) == 256).any()  # documents joined by EOS


def test_validation_documents_left_out():
    corpus = docs(200, 50)
    held = {chr(ord("a") + i % 26) for i, (name, _) in enumerate(corpus) if is_validation(name, 0.2)}
    kept = {chr(ord("a") + i % 26) for i, (name, _) in enumerate(corpus) if not is_validation(name, 0.2)}
    only_held = held - kept
    ids = torch.cat(calibration_batches(ByteTokenizer(), corpus, n=100, seq_len=50, val_fraction=0.2))
    seen = {chr(c) for c in ids.unique().tolist() if c < 256}
    assert seen and not (seen & only_held)


def test_sources_files_folders_jsonl(tmp_path, corpus_dir):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"text": "hello world " * 50}) for _ in range(20)))
    for source in (corpus_dir, str(rows), [str(rows), str(corpus_dir)]):
        batches = calibration_batches(ByteTokenizer(), source, n=4, seq_len=128)
        assert torch.cat(batches).shape == (4, 128)


def test_too_short_says_how_much_there_is():
    with pytest.raises(UserError, match=r"has 30[0-9] tokens but n=8 x seq_len=512 needs 4,096"):
        calibration_batches(ByteTokenizer(), docs(1, 300), n=8, seq_len=512)
    with pytest.raises(UserError, match="seq_len"):
        calibration_batches(ByteTokenizer(), docs(), n=1, seq_len=0)


def tiny() -> Transformer:
    torch.manual_seed(0)
    return Transformer(get_preset("llama-tiny", seq_len=64)).eval()


def batches() -> list[torch.Tensor]:
    return list(torch.randint(0, 4096, (6, 32), generator=torch.Generator().manual_seed(0)).split(2))


def test_stats_match_direct_computation():
    model = tiny()
    stats = collect_model_stats(model, batches(), hessian=True)
    assert stats["blocks.0.attn.q_proj"] is stats["blocks.0.attn.v_proj"]  # one accumulator per shared input
    assert stats["blocks.1.mlp.gate_proj"] is stats["blocks.1.mlp.up_proj"]
    xs = []
    handle = model.blocks[1].mlp.down_proj.register_forward_pre_hook(lambda m, a: xs.append(a[0].flatten(0, 1)))
    with torch.no_grad():
        for b in batches():
            model(b, last_only=True)
    handle.remove()
    x = torch.cat(xs).double()  # (N, intermediate_size)
    st = stats["blocks.1.mlp.down_proj"]
    assert st.n == 6 * 32
    torch.testing.assert_close(st.hessian.double(), 2 * x.T @ x / x.shape[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(st.absmax.double(), x.abs().amax(0), rtol=1e-6, atol=0)
    torch.testing.assert_close(st.mean_abs.double(), x.abs().mean(0), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(st.l2.double(), x.norm(dim=0), rtol=1e-5, atol=1e-8)


def test_groups_in_running_order():
    model = tiny()
    inputs = next(for_each_block(model, batches()))[2]
    assert input_groups(model.blocks[0], 0, inputs) == [
        ["attn.q_proj", "attn.k_proj", "attn.v_proj"], ["attn.o_proj"], ["mlp.gate_proj", "mlp.up_proj"],
        ["mlp.down_proj"]]


def test_block_by_block_matches_whole_model():
    model = tiny()
    last = []
    handle = model.norm_f.register_forward_pre_hook(lambda m, a: last.append(a[0]))
    with torch.no_grad():
        for b in batches():
            model(b)
    handle.remove()
    outs = []
    for i, block, inputs in for_each_block(model, batches()):
        if i == len(model.blocks) - 1:
            with torch.no_grad():
                outs = [block(x, rope, mask, None, i) for x, rope, mask in inputs]
    for a, b in zip(outs, last, strict=True):
        torch.testing.assert_close(a, b)


def test_block_stats_stop_early_and_agree_with_model_stats():
    model = tiny()
    whole = collect_model_stats(model, batches(), hessian=True)
    inputs = next(for_each_block(model, batches()))[2]
    col = collect_block_stats(model.blocks[0], 0, inputs, ["attn.q_proj", "attn.k_proj", "attn.v_proj"])
    assert isinstance(col, InputCollector) and set(col.stats) == {"attn.q_proj", "attn.k_proj", "attn.v_proj"}
    torch.testing.assert_close(col.stats["attn.k_proj"].hessian, whole["blocks.0.attn.k_proj"].hessian)

