"""llmlab's T5 against transformers' T5ForConditionalGeneration, from random-weight folders written in the test."""

import json

import pytest
import torch
from safetensors.torch import save_file

import llmlab
from llmlab.common import checkpoint
from llmlab.common.errors import UserError
from llmlab.models.t5 import T5, T5Config, relative_position_bucket

transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=113, d_model=40, num_layers=2, relative_attention_num_buckets=16,
             relative_attention_max_distance=20, dropout_rate=0.0)
CASES = {  # (config, tied head): v1.0-style relu + tied and scaled; v1.1-style gated + untied; odd head shapes
    "relu-tied": (dict(SMALL, d_kv=10, d_ff=64, num_heads=4, feed_forward_proj="relu"), True),
    "gated-gelu-untied": (dict(SMALL, d_kv=8, d_ff=56, num_heads=3, num_decoder_layers=3,
                               feed_forward_proj="gated-gelu"), False),
    "gated-silu-untied": (dict(SMALL, d_kv=16, d_ff=48, num_heads=2, num_decoder_layers=1,
                               feed_forward_proj="gated-silu"), False),
}


def _hf_folder(tmp_path, case: str):
    """A HF model and a folder laid out as real checkpoints are: an untied one (T5 v1.1, Flan-T5) stores
    lm_head.weight and says tie_word_embeddings=false; transformers 5 itself can only write tied T5s."""
    kwargs, tied = CASES[case]
    config = transformers.T5Config(**kwargs, tie_word_embeddings=tied, decoder_start_token_id=0)
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        if not tied:
            model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight) * 0.5)
        for n, p in model.named_parameters():  # norms away from 1, so a misplaced norm cannot hide
            if "layer_norm" in n:
                p.normal_(1.0, 0.1)
    folder = tmp_path / case
    folder.mkdir()
    sd = {k: v.clone().contiguous() for k, v in model.state_dict().items()
          if not k.endswith("embed_tokens.weight") and not (tied and k == "lm_head.weight")}
    save_file(sd, folder / "model.safetensors")
    hf_config = {**config.to_dict(), "architectures": ["T5ForConditionalGeneration"], "tie_word_embeddings": tied}
    hf_config.pop("scale_decoder_outputs", None)  # as files written before transformers 5
    (folder / "config.json").write_text(json.dumps(hf_config))
    return model, folder


def _inputs(vocab: int, B: int = 3, S: int = 37, T: int = 29):
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(2, vocab, (B, S), generator=g)
    mask = torch.ones(B, S, dtype=torch.long)
    mask[1, 20:] = 0
    mask[2, 7:] = 0
    dec = torch.randint(2, vocab, (B, T), generator=g)
    dec[:, 0] = 0  # the start token
    return idx, mask, dec


@pytest.mark.parametrize("case", list(CASES))
def test_decoder_logits_match_transformers(tmp_path, case):
    hf, folder = _hf_folder(tmp_path, case)
    ours = llmlab.load(folder).model
    assert isinstance(ours, T5) and ours.config.tie_embeddings == CASES[case][1]
    idx, mask, dec = _inputs(ours.config.vocab_size)
    with torch.no_grad():
        expected = hf(input_ids=idx, attention_mask=mask, decoder_input_ids=dec).logits
        for impl in ("sdpa", "explicit"):
            ours.set_attention(impl)
            torch.testing.assert_close(ours(idx, dec, attn_mask=mask), expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(ours.encode(idx, mask), hf.encoder(input_ids=idx, attention_mask=mask)
                                   .last_hidden_state, atol=1e-5, rtol=0)


# transformers 5.24's generate sizes its cache by the encoder's layer count, so more decoder than encoder
# layers fail there (an IndexError inside HF); the untied case here has fewer.
@pytest.mark.parametrize("case", ["relu-tied", "gated-silu-untied"])
def test_greedy_generation_with_cache_equals_hf_generate(tmp_path, case):
    hf, folder = _hf_folder(tmp_path, case)
    ours = llmlab.load(folder).model
    idx, mask, _ = _inputs(ours.config.vocab_size)
    with torch.no_grad():
        expected = hf.generate(input_ids=idx, attention_mask=mask, max_new_tokens=25, do_sample=False,
                               num_beams=1)[:, 1:]
    cached = ours.generate(idx, max_new_tokens=25, attn_mask=mask)
    assert torch.equal(cached, expected)
    assert torch.equal(ours.generate(idx, max_new_tokens=25, attn_mask=mask, use_cache=False), cached)


def test_generation_stops_at_eos_and_pads_finished_rows():
    torch.manual_seed(0)
    model = T5(T5Config(vocab_size=30, n_layer=1, n_head=2, head_dim=8, n_embd=16, intermediate_size=32)).eval()
    idx = torch.randint(2, 30, (4, 6))
    free = model.generate(idx, max_new_tokens=8, eos_id=-1)
    eos = int(free[0, 2])  # pretend the third token of row 0 ends a sequence
    out = model.generate(idx, max_new_tokens=8, eos_id=eos)
    for row_free, row in zip(free.tolist(), out.tolist(), strict=True):
        stop = row_free.index(eos) if eos in row_free else len(row_free)
        assert row[:stop + 1] == row_free[:stop + 1]
        assert all(t == model.config.pad_id for t in row[stop + 1:])


def test_relative_buckets_match_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = torch.arange(-300, 300)[None, :] - torch.arange(0, 5)[:, None]
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (16, 20), (8, 300)):
            expected = T5Attention._relative_position_bucket(rel, bidirectional, buckets, distance)
            assert torch.equal(relative_position_bucket(rel, bidirectional, buckets, distance), expected)


def test_checkpoint_reopens_with_llmlab_load(tmp_path):
    torch.manual_seed(0)
    model = T5(T5Config(vocab_size=40, n_layer=1, n_decoder_layer=2, n_head=2, head_dim=8, n_embd=16,
                        intermediate_size=32, mlp="gated-gelu", tie_embeddings=False, scale_logits=False)).eval()
    checkpoint.save_checkpoint(tmp_path / "ckpt", model, {"run": {}})
    again = llmlab.load(tmp_path / "ckpt", with_tokenizer=False).model
    idx, dec = torch.randint(0, 40, (2, 7)), torch.randint(0, 40, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(again(idx, dec), model(idx, dec))


def test_bad_configs_are_user_errors(tmp_path):
    _, folder = _hf_folder(tmp_path, "relu-tied")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["T5EncoderModel"]}))
    with pytest.raises(UserError, match="not supported"):
        llmlab.load(folder)
    (folder / "config.json").write_text(json.dumps({**config, "num_layers": 3}))
    with pytest.raises(UserError, match="do not match"):
        llmlab.load(folder)
    with pytest.raises(UserError, match="mlp"):
        T5Config(mlp="gated-swish")
