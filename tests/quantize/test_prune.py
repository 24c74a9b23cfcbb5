"""Pruning: exact sparsity levels, 2:4 patterns, Wanda's preference for busy input channels, global vs per layer."""

import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.models import Transformer, get_preset
from llmlab.quantize.prune import (
    is_n_m_sparse,
    n_m_mask,
    prune_magnitude,
    prune_n_m,
    prune_wanda,
    semi_structured_support,
    sparsity_report,
    unstructured_mask,
    wanda_score,
)


def tiny_model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(get_preset("llama-tiny", seq_len=64)).eval()


def batches(n: int = 4, T: int = 32, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return list(torch.randint(0, 4096, (n, T), generator=g).split(2))


def test_docstring_examples():
    assert unstructured_mask(torch.tensor([[4.0, 1, 3, 2]]), 0.5).tolist() == [[True, False, True, False]]
    keep = n_m_mask(torch.tensor([[4.0, 1, 3, 2, 0, 5, 6, 1]]), 2, 4)
    assert keep.tolist() == [[True, False, True, False, False, True, True, False]]


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_unstructured_exact_counts(sparsity):
    score = torch.randn(33, 70).abs()
    keep = unstructured_mask(score, sparsity)
    assert int((~keep).sum()) == round(sparsity * score.numel())
    rows = unstructured_mask(score, sparsity, per_row=True)
    assert ((~rows).sum(1) == round(sparsity * 70)).all()
    assert unstructured_mask(torch.ones(4, 8), 0.5).sum() == 16  # ties still give the exact count


def test_bad_arguments_are_user_errors():
    with pytest.raises(UserError, match="sparsity"):
        unstructured_mask(torch.ones(2, 2), 1.0)
    with pytest.raises(UserError, match="multiple of m=4"):
        n_m_mask(torch.ones(2, 6))
    with pytest.raises(UserError, match="scope"):
        prune_magnitude(tiny_model(), 0.5, scope="row")


def test_magnitude_per_layer_exact_and_keeps_largest():
    model = tiny_model()
    q = model.blocks[0].attn.q_proj.weight
    big = q.abs() >= q.abs().flatten().kthvalue(q.numel() // 2 + 1).values  # the upper half
    report = prune_magnitude(model, 0.5)
    for name, frac in report["layers"].items():
        n = model.get_submodule(name).weight.numel()
        assert frac == round(0.5 * n) / n, name
    assert "lm_head" not in report["layers"] and model.lm_head.weight.ne(0).all()  # skipped (tied embedding)
    assert bool((q[big] != 0).all())


def test_global_threshold_differs_from_per_layer():
    model = tiny_model()
    with torch.no_grad():
        model.blocks[0].attn.q_proj.weight.mul_(10)  # one layer of large weights
        model.blocks[1].mlp.down_proj.weight.mul_(0.1)  # and one of small ones
    report = prune_magnitude(model, 0.5, scope="global")
    assert report["zeros"] == round(0.5 * report["params"])
    layers = report["layers"]
    assert layers["blocks.0.attn.q_proj"] < 0.05  # large weights survive a global threshold
    assert layers["blocks.1.mlp.down_proj"] > 0.95  # small ones go
    per_layer = prune_magnitude(tiny_model(), 0.5)["layers"]
    assert max(per_layer.values()) - min(per_layer.values()) < 1e-3


def test_two_four_by_magnitude():
    model = tiny_model()
    report = prune_n_m(model, 2, 4)
    assert report["2:4"] and report["sparsity"] == 0.5
    for name in report["layers"]:
        w = model.get_submodule(name).weight
        groups = w.view(w.shape[0], -1, 4)
        assert ((groups == 0).sum(-1) >= 2).all(), name
        assert is_n_m_sparse(w)


def test_wanda_keeps_columns_with_large_activations():
    w = torch.randn(64, 32)
    l2 = torch.ones(32)
    l2[:4] = 1000.0  # four busy input channels
    keep = unstructured_mask(wanda_score(w, l2), 0.5, per_row=True)
    assert keep[:, :4].all()
    magnitude = unstructured_mask(w.abs(), 0.5, per_row=True)
    assert not magnitude[:, :4].all()  # magnitude alone would drop some of them


def test_wanda_model_end_to_end():
    model = tiny_model()
    with torch.no_grad():
        model.blocks[0].attn_norm.weight[:8] *= 1000  # channels 0..7 of q/k/v inputs carry large activations
    report = prune_wanda(model, batches(), 0.5)
    q = model.blocks[0].attn.q_proj.weight
    assert (q[:, :8] != 0).float().mean() > 0.99
    assert abs((q[:, 8:] != 0).float().mean() - 0.5) < 0.05
    assert all(abs(f - 0.5) < 1e-9 for f in report["layers"].values())
    out = model(batches()[0])
    assert torch.isfinite(out).all()


def test_wanda_two_four():
    model = tiny_model()
    report = prune_n_m(model, 2, 4, batches=batches())
    assert report["2:4"] and report["sparsity"] == 0.5


def test_sparsity_report_counts_zeros():
    model = tiny_model()
    with torch.no_grad():
        model.blocks[0].attn.q_proj.weight[:, :64] = 0
    report = sparsity_report(model, skip=("lm_head",))
    assert report["layers"]["blocks.0.attn.q_proj"] == 0.5
    assert report["zeros"] == 128 * 64 and not report["2:4"]


def test_semi_structured_support_says_why():
    ok, why = semi_structured_support("cpu")
    assert not ok and "CUDA" in why  # torch 2.13 CPU build: the kernel is CUDA-only
