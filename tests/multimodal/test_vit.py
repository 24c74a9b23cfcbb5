"""ViT: patch embedding as flatten-and-matmul, MAE's 2-D positions, bidirectional attention, both attention paths,
a new head, bad input. Equality with CLIP's tower through transformers is in test_hf_llava.py."""

import numpy as np
import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.multimodal.vit import ViT, ViTConfig, sincos_2d


def tiny(**kw) -> ViT:
    torch.manual_seed(0)
    return ViT(ViTConfig(image_size=32, patch_size=8, n_layer=2, n_head=4, n_embd=32, **kw)).eval()


def mae_2d_sincos(dim: int, grid: int) -> np.ndarray:
    """MAE's reference (facebookresearch/mae, util/pos_embed.py), in numpy."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    g = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))  # w goes first
    emb = np.concatenate([one_d(dim // 2, g[0]), one_d(dim // 2, g[1])], axis=1)
    return np.concatenate([np.zeros([1, dim]), emb], axis=0)


def test_sincos_equals_mae():
    torch.testing.assert_close(sincos_2d(8, 64), torch.tensor(mae_2d_sincos(64, 8)).float(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("pos", ["learned", "sincos2d"])
def test_patch_embedding_is_flatten_and_matmul(pos):
    model = tiny(pos=pos)
    x = torch.randn(2, 3, 32, 32)
    patches = x.unfold(2, 8, 8).unfold(3, 8, 8)  # (B, 3, 4, 4, 8, 8)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, 16, 3 * 64)  # (B, N, 3*P*P), row by row
    w = model.patch_emb.weight.reshape(32, -1)  # (C, 3*P*P)
    expected = patches @ w.T + model.patch_emb.bias
    pos_table = model.pos_emb.weight if pos == "learned" else model.pos_table
    torch.testing.assert_close(model.embed(x)[:, 1:], expected + pos_table[1:], atol=1e-5, rtol=0)
    torch.testing.assert_close(model.embed(x)[:, 0], (model.cls_token + pos_table[0]).expand(2, -1))


def test_attention_is_bidirectional_and_paths_agree():
    model = tiny(n_classes=3)
    x = torch.randn(2, 3, 32, 32)
    y = x.clone()
    y[:, :, 24:, 24:] += 1.0  # only the last patch changes
    with torch.no_grad():
        a, b = model.encode(x), model.encode(y)
        assert (a[:, :2] - b[:, :2]).abs().max() > 1e-3  # [CLS] and the first patch see the last one
        logits = model(x)
        model.set_attention("explicit")
        torch.testing.assert_close(model(x), logits, atol=1e-5, rtol=0)
    assert logits.shape == (2, 3)


def test_replace_head_keeps_the_body():
    model = tiny(n_classes=3)
    body = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    model.replace_head(5)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5) and model.config.n_classes == 5
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in body.items())


def test_bad_input():
    model = tiny()
    with pytest.raises(UserError, match="reads"):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(UserError, match="multiple of patch_size"):
        ViTConfig(image_size=30, patch_size=8)
    with pytest.raises(UserError, match="pos"):
        ViTConfig(pos="rope")
    with pytest.raises(UserError, match="unknown field"):
        ViTConfig.from_dict({"n_layers": 2})
    with pytest.raises(UserError, match="two classes"):
        model.replace_head(1)
