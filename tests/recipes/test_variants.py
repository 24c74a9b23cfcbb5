"""The three architecture comparisons and attention maps, end to end on tiny models and the test corpus."""

import json

import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.recipes.variants import (
    AttentionMapArgs,
    GradNorms,
    MoEArgs,
    NormsArgs,
    PositionsArgs,
    attention,
    moe,
    norms,
    positions,
)

TINY = dict(n_layer=2, n_head=2, n_embd=32, seq_len=32, batch_size=4, max_steps=12, warmup_steps=3, eval_interval=6,
            eval_tokens=512, progress=False, device="cpu")


def _png(path) -> bool:
    return path.read_bytes()[:4] == b"\x89PNG"


def test_norms_comparison(tmp_path, data_dir):
    summary = norms(NormsArgs(out=str(tmp_path), data=str(data_dir), **TINY))
    names = [r["name"] for r in summary["runs"]]
    assert names == ["pre-LN, warmup 3", "pre-LN, warmup 0", "post-LN, warmup 3", "post-LN, warmup 0"]
    for r in summary["runs"]:
        assert len(r["grad_norms"]) == r["steps"] and len(r["grad_norms"][0]) == 2
        assert r["diverged_at"] is not None or r["steps"] == 12
    assert "| post-LN, warmup 0 |" in (tmp_path / "report.md").read_text()
    assert _png(tmp_path / "loss.png") and _png(tmp_path / "grad_norms.png")


def test_grad_norms_are_measured_before_clipping():
    """Per-block norms from the hooks equal the norms of the gradients autograd leaves, before clipping."""
    from llmlab.models import ModelConfig, Transformer

    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=50, seq_len=16, n_layer=2, n_head=2, n_embd=16))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    probe = GradNorms(model, opt)
    model(torch.randint(0, 50, (2, 8))).pow(2).mean().backward()
    expected = [torch.cat([p.grad.flatten() for p in b.parameters()]).norm().item() for b in model.blocks]
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-6)
    opt.step()
    assert probe.rows[0] == pytest.approx(expected, rel=1e-5)


def test_positions_comparison(tmp_path, data_dir):
    summary = positions(PositionsArgs(out=str(tmp_path), data=str(data_dir), positions=["learned", "alibi", "none"],
                                      **TINY))
    runs = {r["name"]: r for r in summary["runs"]}
    assert runs["learned"]["bpb_at_2L"] is None and runs["alibi"]["bpb_at_2L"] > 0
    assert all(0 < r["bpb_at_L"] < 8 for r in runs.values())
    assert runs["alibi"]["config"]["seq_len"] == 64 and runs["learned"]["config"]["seq_len"] == 32
    assert _png(tmp_path / "bpb.png") and _png(tmp_path / "loss_by_position.png")
    assert len(runs["alibi"]["loss_by_position"]) == 64 and len(runs["learned"]["loss_by_position"]) == 32


def test_moe_comparison(tmp_path, data_dir):
    summary = moe(MoEArgs(out=str(tmp_path), data=str(data_dir), n_expert=4, expert_top_k=2, expert_size=16,
                          capacity_factor=1.0, **TINY))
    dense_active, mixture, dense_total = summary["runs"]
    assert dense_active["config"]["intermediate_size"] == 32 and dense_total["config"]["intermediate_size"] == 64
    assert dense_active["active_params"] == mixture["active_params"] - 2 * 32 * 4  # + the routers
    assert mixture["n_params"] == pytest.approx(dense_total["n_params"] + 2 * 32 * 4)
    share = mixture["load"]["share"]
    assert len(share) == 2 and all(sum(layer) == pytest.approx(1.0) for layer in share)
    assert 0 <= mixture["load"]["dropped_fraction"] < 1
    assert all(r["tokens_per_s"] > 0 for r in summary["runs"])
    assert _png(tmp_path / "expert_load.png")
    assert json.loads((tmp_path / "summary.json").read_text())["runs"][1]["name"].startswith("MoE")


def test_attention_maps_recipe(tmp_path, data_dir):
    """A trained-from-scratch checkpoint folder: maps for every layer, or only the ones asked for."""
    from llmlab.common import checkpoint
    from llmlab.common.constants import TOKENIZER_FILE
    from llmlab.models import ModelConfig, Transformer
    from llmlab.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(data_dir / TOKENIZER_FILE)
    model = Transformer(ModelConfig(vocab_size=tokenizer.vocab_size, seq_len=32, n_layer=3, n_head=2, n_embd=16))
    checkpoint.save_checkpoint(tmp_path / "ckpt", model, {}, tokenizer=tokenizer)
    summary = attention(AttentionMapArgs(model=str(tmp_path / "ckpt"), prompt="def f(x): return x", out=str(tmp_path),
                                         layers=[0, 2]))
    assert summary["modules"] == ["blocks.0.attn", "blocks.2.attn"]
    assert _png(tmp_path / "attention.png")
    with pytest.raises(UserError, match="--layers"):
        attention(AttentionMapArgs(model=str(tmp_path / "ckpt"), out=str(tmp_path), layers=[7]))
