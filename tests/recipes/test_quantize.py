"""`llmlab quantize`, `prune` and `export gguf` on a tiny model: each output reopens with `llmlab.load` and
computes what the in-process model did; bad input is one line."""

import json

import pytest
import torch

import llmlab
from llmlab.cli import main
from llmlab.common import log
from llmlab.common.checkpoint import save_checkpoint
from llmlab.models import Transformer, get_preset
from llmlab.quantize import QuantizedLinear
from llmlab.tokenizer import Tokenizer

TEXT = "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n    y: int = 0\n" * 200


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    log.set_quiet(True)
    root = tmp_path_factory.mktemp("q")
    tok = Tokenizer.train(TEXT, 300, special_tokens=("<|endoftext|>",))
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=tok.vocab_size, seq_len=64))
    save_checkpoint(root / "tiny", model, {}, tokenizer=tok)
    (root / "calib.txt").write_text(TEXT)
    return root


IDX = torch.randint(3, 290, (1, 24), generator=torch.Generator().manual_seed(1))


def logits(model):
    with torch.no_grad():
        return model.eval()(IDX)


@pytest.mark.parametrize("argv", [
    ["--method", "int8"],
    ["--method", "int4", "--group-size", "32"],
    ["--method", "gptq", "--group-size", "32"],
    ["--method", "awq", "--group-size", "32"],
    ["--method", "w8a8"],
])
def test_quantize_reopens_with_the_fast_layers(base, tmp_path, argv):
    out = tmp_path / "q"
    calib = ["--calib", str(base / "calib.txt"), "--n-calib", "8", "--calib-seq-len", "32"]
    assert main(["quantize", "--model", str(base / "tiny"), *argv, *calib, "--out", str(out), "--no-progress"]) == 0
    loaded = llmlab.load(out)
    assert isinstance(loaded.model.blocks[0].attn.q_proj, QuantizedLinear)
    meta = json.loads((out / "llmlab.json").read_text())
    assert meta["quantization"]["method"] == argv[1]
    summary = json.loads((out / "summary.json").read_text())
    float_bytes = 4 * sum(p.numel() for p in llmlab.load(base / "tiny").model.parameters())
    assert summary["memory_bytes"] < float_bytes
    # close to the float model (a tiny random model; the quantisation error is what is left)
    diff = (logits(loaded.model) - logits(llmlab.load(base / "tiny").model)).abs().max()
    assert diff < 0.5, diff
    assert len(loaded.generate(IDX[0].tolist(), 5, temperature=0)) == 5


def test_prune_and_export(base, tmp_path, capsys):
    calib = ["--calib", str(base / "calib.txt"), "--n-calib", "8", "--calib-seq-len", "32"]
    assert main(["prune", "--model", str(base / "tiny"), "--method", "wanda", "--sparsity", "0.5", *calib,
                 "--heldout-kb", "2", "--out", str(tmp_path / "p"), "--no-progress"]) == 0
    pruned = llmlab.load(tmp_path / "p").model
    w = pruned.blocks[0].mlp.up_proj.weight
    assert abs((w == 0).float().mean().item() - 0.5) < 0.01
    assert main(["prune", "--model", str(base / "tiny"), "--method", "2:4", *calib, "--heldout-kb", "0",
                 "--out", str(tmp_path / "p24"),
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "p24" / "summary.json").read_text())["2:4"] is True
    assert main(["export", "gguf", "--model", str(tmp_path / "p"), "--type", "f32", "--out",
                 str(tmp_path / "m.gguf"), "--no-progress"]) == 0
    torch.testing.assert_close(logits(llmlab.load(tmp_path / "m.gguf").model), logits(pruned), atol=1e-4, rtol=0)
    # a group that does not divide the width (64) is zero-padded (the documented rule) and still reopens
    assert main(["quantize", "--model", str(base / "tiny"), "--method", "int4", "--group-size", "48",
                 "--out", str(tmp_path / "g48"), "--no-progress"]) == 0
    assert len(llmlab.load(tmp_path / "g48").generate(IDX[0].tolist(), 3, temperature=0)) == 3
    capsys.readouterr()
    assert main(["quantize", "--model", str(base / "tiny"), "--method", "int4", "--group-size", "-5",
                 "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "group" in err and "-5" in err
    assert main(["quantize", "--model", str(base / "tiny"), "--method", "int8", "--bits", "4",
                 "--out", str(tmp_path / "bad2")]) == 2
    assert main(["quantize", "--model", str(base / "tiny"), "--method", "gptq", "--calib", str(tmp_path / "nope.txt"),
                 "--out", str(tmp_path / "bad3")]) == 2
    assert "nope.txt" in capsys.readouterr().err


def test_compare_tabulates_every_row(base, tmp_path):
    from llmlab.recipes.quantize import CompareArgs, compare

    rows = compare(CompareArgs(model=str(base / "tiny"), configs=["float32", "int8", "wanda-50%"], heldout_kb=2,
                               mc_rows=4, decode_tokens=4, calib=[str(base / "calib.txt")], n_calib=8,
                               calib_seq_len=32, out=str(tmp_path), progress=False))
    assert [r["config"] for r in rows] == ["float32", "int8", "wanda-50%"]
    assert rows[0]["ppl_change_pct"] == 0 and rows[1]["memory_mb"] < rows[0]["memory_mb"]
    assert abs(rows[1]["ppl_change_pct"]) < 5  # per-channel int8 barely moves a model's perplexity
    assert "| int8 |" in (tmp_path / "compare.md").read_text() and (tmp_path / "compare.png").is_file()


def test_prune_with_recovery_and_the_sparsity_curve(base, tmp_path):
    from llmlab.recipes.quantize import PruneCurveArgs, prune_curve

    calib = ["--calib", str(base / "calib.txt"), "--n-calib", "8", "--calib-seq-len", "32"]
    out = tmp_path / "rec"
    assert main(["prune", "--model", str(base / "tiny"), "--method", "magnitude", "--sparsity", "0.6", *calib,
                 "--recover-steps", "4", "--heldout-kb", "2", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recover_steps"] == 4 and summary["bits_per_byte_recovered"] > 0
    assert summary["bits_per_byte_pruned"] != summary["bits_per_byte_dense"]
    w = llmlab.load(out).model.blocks[1].mlp.down_proj.weight
    assert abs((w == 0).float().mean().item() - 0.6) < 0.01  # recovery merged through the mask
    assert main(["prune", "--model", str(base / "tiny"), "--recover-steps", "-1", "--out", str(tmp_path / "x")]) == 2
    rows = prune_curve(PruneCurveArgs(model=str(base / "tiny"), methods=["magnitude", "wanda"], sparsities=[0.3, 0.7],
                                      heldout_kb=2, calib=[str(base / "calib.txt")], n_calib=8, calib_seq_len=32,
                                      out=str(tmp_path / "curve"), progress=False))
    assert [(r["method"], r["sparsity"]) for r in rows] == [("dense", 0.0), ("magnitude", 0.3), ("magnitude", 0.7),
                                                           ("wanda", 0.3), ("wanda", 0.7)]
    magnitude = {r["sparsity"]: r["bits_per_byte"] for r in rows if r["method"] == "magnitude"}
    assert magnitude[0.7] > magnitude[0.3]  # more zeros, more damage
    assert (tmp_path / "curve" / "curve.png").is_file()
    with pytest.raises(llmlab.common.errors.UserError, match="sparsities"):
        prune_curve(PruneCurveArgs(model=str(base / "tiny"), sparsities=[1.5], out=str(tmp_path / "c2")))
