"""llmlab's BERT against transformers' BERT, from random-weight checkpoints written in the test (no download)."""

import json

import pytest
import torch

import llmlab
from llmlab.common import checkpoint
from llmlab.common.errors import UserError
from llmlab.models.bert import Bert, BertConfig

transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=131, hidden_size=48, num_hidden_layers=2, intermediate_size=80, max_position_embeddings=40)
CASES = {  # non-default on purpose: untied decoder, 3 segment types, head counts, activations
    "mlm-untied": ("BertForMaskedLM", dict(SMALL, num_attention_heads=4, tie_word_embeddings=False,
                                           type_vocab_size=3, layer_norm_eps=1e-7)),
    "mlm-tied-gelu-new": ("BertForMaskedLM", dict(SMALL, num_attention_heads=2, hidden_act="gelu_new")),
    "model-with-pooler": ("BertModel", dict(SMALL, num_attention_heads=6, hidden_act="relu")),
    "classifier": ("BertForSequenceClassification", dict(SMALL, num_attention_heads=3, num_labels=3)),
}


def _hf_folder(tmp_path, case: str):
    arch, kwargs = CASES[case]
    config = transformers.BertConfig(**kwargs)
    torch.manual_seed(0)
    model = getattr(transformers, arch)(config).eval()
    with torch.no_grad():  # random biases and norms, so a wrong mapping cannot hide behind zeros and ones
        for n, p in model.named_parameters():
            if n.endswith("bias") or "LayerNorm" in n:
                p.normal_(0, 0.1).add_(1.0 if "LayerNorm.weight" in n else 0.0)
    model.save_pretrained(tmp_path / case)
    return model, tmp_path / case


def _inputs(config: dict, B: int = 3, T: int = 17):
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, config["vocab_size"], (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 11:] = 0  # right padding
    mask[2, 5:] = 0
    types = torch.randint(0, config.get("type_vocab_size", 2), (B, T), generator=g)
    return idx, mask, types


@pytest.mark.parametrize("case", list(CASES))
def test_outputs_match_transformers(tmp_path, case):
    hf, folder = _hf_folder(tmp_path, case)
    ours = llmlab.load(folder).model
    assert isinstance(ours, Bert)
    idx, mask, types = _inputs(CASES[case][1])
    with torch.no_grad():
        out = hf(input_ids=idx, attention_mask=mask, token_type_ids=types)
        expected = out.last_hidden_state if case == "model-with-pooler" else out.logits
        for impl in ("sdpa", "explicit"):
            ours.set_attention(impl)
            torch.testing.assert_close(ours(idx, attn_mask=mask, token_type_ids=types), expected, atol=1e-4, rtol=0)


def test_mlm_logits_without_mask_and_at_selected_positions(tmp_path):
    hf, folder = _hf_folder(tmp_path, "mlm-untied")
    ours = llmlab.load(folder).model
    idx, _, _ = _inputs(CASES["mlm-untied"][1])
    keep = torch.rand(idx.shape, generator=torch.Generator().manual_seed(2)) < 0.3
    with torch.no_grad():
        expected = hf(input_ids=idx).logits
        torch.testing.assert_close(ours(idx), expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(ours(idx, logits_mask=keep), expected[keep], atol=1e-4, rtol=0)


def test_pooled_cls_matches_transformers_pooler(tmp_path):
    hf, folder = _hf_folder(tmp_path, "model-with-pooler")
    ours = llmlab.load(folder).model
    idx, mask, types = _inputs(CASES["model-with-pooler"][1])
    with torch.no_grad():
        expected = hf(input_ids=idx, attention_mask=mask, token_type_ids=types).pooler_output
        hidden = ours.encode(idx, mask, types)
        torch.testing.assert_close(torch.tanh(ours.pooler(ours.pool(hidden, mask, "cls"))), expected, atol=1e-4,
                                   rtol=0)
        mean = ours.pool(hidden, mask, "mean")
        torch.testing.assert_close(mean[1], hidden[1, :11].mean(0))


def test_checkpoint_reopens_with_llmlab_load(tmp_path):
    torch.manual_seed(0)
    model = Bert(BertConfig(vocab_size=50, seq_len=16, n_layer=1, n_head=2, n_embd=16)).eval()
    checkpoint.save_checkpoint(tmp_path / "ckpt", model, {"run": {}})
    meta = json.loads((tmp_path / "ckpt" / "llmlab.json").read_text())
    assert meta["model"]["arch"] == "bert"
    again = llmlab.load(tmp_path / "ckpt", with_tokenizer=False).model
    idx = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(again(idx), model(idx))
    assert again.lm_head.weight is again.tok_emb.weight


def test_unsupported_configs_are_user_errors(tmp_path):
    _, folder = _hf_folder(tmp_path, "mlm-tied-gelu-new")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "position_embedding_type": "relative_key"}))
    with pytest.raises(UserError, match="absolute positions"):
        llmlab.load(folder)
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["BertForQuestionAnswering"]}))
    with pytest.raises(UserError, match="not supported"):
        llmlab.load(folder)
    with pytest.raises(UserError, match="classify head"):
        BertConfig(head="classify", n_classes=1)
    with pytest.raises(ValueError, match="longer than"):
        Bert(BertConfig(vocab_size=10, seq_len=4, n_layer=1, n_head=1, n_embd=8))(torch.zeros(1, 5, dtype=torch.long))
