"""GGUF export: block formats byte-identical to the `gguf` package, files llmlab reopens exactly, and
llama.cpp (when llama-cpp-python is installed) tokenising like llmlab and computing the same logits
(tiny models, default run) and greedy tokens (SmolLM2 and a speedrun model, slow)."""

import sysconfig
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

import llmlab
from llmlab.common.errors import UserError
from llmlab.models.config import get_preset
from llmlab.models.gguf import dequantize, unpermute_rope
from llmlab.models.gpt import Transformer
from llmlab.quantize.gguf_export import export_gguf, gguf_roundtrip, llama_cpp_pre, permute_rope, tensor_type
from llmlab.quantize.gguf_quants import quantize_q4_0, quantize_q4_k, quantize_q6_k, quantize_q8_0
from llmlab.tokenizer import Tokenizer, patterns

STDLIB = Path(sysconfig.get_paths()["stdlib"])
SAMPLE = ("def wrap(text, width=70):\n\t\"\"\"Wrap 12345 words.\"\"\"  \n\n  return [x for x in text]  "
          "# héllo ✓<|endoftext|>")
ORACLE = {"q8_0": (quantize_q8_0, gguf.GGMLQuantizationType.Q8_0),
          "q4_0": (quantize_q4_0, gguf.GGMLQuantizationType.Q4_0)}


def _edge_cases(rng: np.random.Generator) -> np.ndarray:
    """Rows of 64 (two blocks each) covering the corners of the rounding rules."""
    w = rng.standard_normal((24, 64)).astype(np.float32)
    w[0] = 0  # all zeros: scale 0, codes at the centre
    w[1, 7] = 1e4  # one huge value
    w[2] = -np.abs(w[2])  # all negative: Q4_0's scale turns positive
    w[3] = np.abs(w[3])
    w[4, :32] = np.arange(32) - 16.0  # largest magnitude negative (-16)
    w[5, :32] = np.linspace(-127, 127, 32).round() + 0.5  # a half-integer grid (d = 127.5/127)
    w[6, :32] = 127.0
    w[6, 1:32:2] = np.arange(16) - 7.5  # x/d lands on .5: C's roundf goes away from zero
    w[7, :32] = -8.0
    w[7, 1:32:2] = np.arange(16) * 0.5  # Q4_0 with d = 1: x/d + 8.5 on integers
    w[8] = 1e-30  # subnormal-ish scales that underflow float16
    w[9] = 6e4  # near float16's max
    w[10, ::2] = 0
    return w


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0"])
def test_block_quantisers_are_byte_identical_to_gguf(qtype):
    ours, oracle = ORACLE[qtype]
    rng = np.random.default_rng(0)
    for scale in (1e-3, 1.0, 50.0):
        w = rng.standard_normal((32, 256)).astype(np.float32) * scale
        assert np.array_equal(ours(w), gguf.quants.quantize(w, oracle))
    w = _edge_cases(rng)
    assert np.array_equal(ours(w), gguf.quants.quantize(w, oracle))


K_QUANTS = {"q6_k": (quantize_q6_k, "Q6_K", 0.02), "q4_k": (quantize_q4_k, "Q4_K", 0.12)}


@pytest.mark.parametrize("qtype", list(K_QUANTS))
def test_k_quants_decode_alike_in_gguf_and_llmlab_and_stay_close(qtype):
    """No reference encoder exists outside llama.cpp's C code, so: the `gguf` package's decoder and llmlab's
    reader give the same floats from our bytes, every weight is within half a step of its original, and the
    relative RMS error is what 6 and 4 bits allow."""
    ours, type_name, rms_bound = K_QUANTS[qtype]
    rng = np.random.default_rng(0)
    w = np.concatenate([rng.standard_normal((16, 512)).astype(np.float32) * 0.05,
                        np.repeat(_edge_cases(rng), 8, axis=1)[:, :512]])  # (40, 512)
    w[-1] = np.abs(w[-1]) + 0.5  # all positive, far from 0: Q4_K's minimum is still 0
    raw = ours(w)
    assert raw.shape == (40, 512 // 256 * {"Q6_K": 210, "Q4_K": 144}[type_name])
    theirs = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[type_name])
    mine = dequantize(np.ascontiguousarray(raw), type_name, w.shape).numpy()
    np.testing.assert_array_equal(mine, theirs)
    normal = w[:16]
    rel = np.sqrt(((mine[:16] - normal) ** 2).mean() / (normal ** 2).mean())
    assert rel < rms_bound, rel
    # a sub-block's range / levels is its step: rounding makes half a step of error, and rounding the
    # scales themselves to 6 or 8 bits a little more; a whole step bounds both (rows of similar scale)
    levels, sub = {"Q6_K": (63, 16), "Q4_K": (15, 32)}[type_name]
    step = np.ptp(normal.reshape(16, -1, sub), axis=2) / levels  # (16, sub-blocks)
    assert (np.abs(mine[:16] - normal).reshape(16, -1, sub).max(axis=2) <= step).all()
    assert np.isfinite(mine).all() and (mine[16] == 0).all()  # the all-zero edge row stays zero


def test_q8_0_worked_example():
    x = np.zeros((1, 32), np.float32)
    x[0, :3] = [0.5, -1.27, 0.005]  # d = 1.27 / 127 = 0.01; 0.005 / 0.01 = 0.5 rounds away from zero
    block = quantize_q8_0(x)[0]
    assert block[:2].view(np.float16)[0] == np.float16(0.01)
    assert block[2:5].view(np.int8).tolist() == [50, -127, 1]


def test_q4_0_nibble_layout():
    x = np.zeros((1, 32), np.float32)
    x[0, 0], x[0, 16] = -8.0, 7.0  # d = -8 / -8 = 1: codes 0 (value 0) and 15 (value 16)
    block = quantize_q4_0(x)[0]
    assert block[:2].view(np.float16)[0] == 1.0
    assert block[2] == 0x0 | (15 << 4)  # code 0 in the low nibble, code 16 in the high one
    assert block[3] == 0x88  # zeros sit at code 8


def test_permute_rope_is_the_inverse_of_unpermute():
    w = torch.randn(6 * 8, 16)
    assert torch.equal(unpermute_rope(permute_rope(w, 6), 6), w)
    head = torch.arange(8.0)[:, None]  # one head, D = 8: rows 0..7 -> 0, 4, 1, 5, 2, 6, 3, 7
    assert permute_rope(head, 1).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """A GPT-4-pattern tokenizer trained by llmlab (special <|endoftext|>, ChatML template)."""
    return Tokenizer.train((STDLIB / "textwrap.py").read_text(), 512)


def _tiny(preset: str, **overrides) -> Transformer:
    torch.manual_seed(0)
    return Transformer(get_preset(preset, **{"vocab_size": 512, "n_layer": 2, **overrides})).eval()


CASES = {  # name -> (preset, overrides, llama.cpp architecture)
    "llama": ("llama-tiny", {}, "llama"),
    "llama-untied-padded": ("llama-tiny", {"tie_embeddings": False, "vocab_size": 576}, "llama"),
    "qwen2": ("llama-tiny", {"qkv_bias": True}, "qwen2"),
    "gpt2": ("gpt2-tiny", {}, "gpt2"),
    "llama-256": ("llama-tiny", {"n_embd": 256}, "llama"),  # rows of 256: K-quants apply (64 falls back)
}


ROUND_TRIPS = [(case, qtype) for case in ("llama", "gpt2") for qtype in ("f16", "q8_0", "q4_0")]
ROUND_TRIPS += [("llama-untied-padded", "q4_0"), ("qwen2", "q8_0"), ("llama-256", "q6_k"), ("llama-256", "q4_k"),
                ("llama", "q4_k")]


@pytest.mark.parametrize("case, qtype", ROUND_TRIPS)
def test_export_reopens_with_the_same_logits_and_ids(case, qtype, tokenizer, tmp_path):
    preset, overrides, arch = CASES[case]
    model = _tiny(preset, **overrides)
    if overrides.get("qkv_bias"):
        for block in model.blocks:
            torch.nn.init.normal_(block.attn.q_proj.bias, std=0.1)
    path = export_gguf(model, tokenizer, tmp_path / "m.gguf", qtype=qtype)
    loaded = llmlab.load(path)
    idx = torch.tensor([tokenizer.encode(SAMPLE)])
    with torch.no_grad():
        got, want, orig = loaded.model(idx), gguf_roundtrip(model, qtype)(idx), model(idx)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got - orig).abs().max() > 0  # the weights really went through the format
    assert loaded.tokenizer.encode(SAMPLE, allowed_special="all") == tokenizer.encode(SAMPLE, allowed_special="all")
    assert loaded.tokenizer.decode(tokenizer.encode(SAMPLE)) == SAMPLE
    assert loaded.tokenizer.chat_template == tokenizer.chat_template
    fields = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type.name for t in fields.tensors}
    assert fields.fields["general.architecture"].contents() == arch
    sd = dict(model.state_dict())
    want = {g: tensor_type(g, sd[n], qtype) for g, n in (("token_embd.weight", "tok_emb.weight"),
                                                          ("blk.0.ffn_down.weight", "blocks.0.mlp.down_proj.weight"))
            if n in sd}
    assert {g: types[g] for g in want} == want
    assert want["token_embd.weight"] == (qtype.upper() if model.config.n_embd % 256 == 0 or "_k" not in qtype
                                         else {"q4_k": "Q4_0", "q6_k": "Q8_0"}[qtype])
    assert types["output_norm.weight"] == "F32" and types["blk.1.attn_norm.weight"] == "F32"
    assert ("output.weight" in types) == (not model.config.tie_embeddings)
    assert fields.fields["tokenizer.ggml.pre"].contents() == "llama-bpe"
    assert len(fields.fields["tokenizer.ggml.tokens"].data) == model.config.vocab_size


def test_gpt2_layout_and_metadata(tokenizer, tmp_path):
    model = _tiny("gpt2-tiny")
    fields = gguf.GGUFReader(export_gguf(model, tokenizer, tmp_path / "g.gguf", qtype="q8_0"))
    types = {t.name: (t.tensor_type.name, t.shape.tolist()) for t in fields.tensors}
    assert types["blk.0.attn_qkv.weight"] == ("Q8_0", [128, 384])  # GGUF lists dims innermost first
    assert types["blk.0.attn_qkv.bias"] == ("F32", [384])
    assert types["position_embd.weight"] == ("F32", [128, 256])
    meta = {k: f.contents() for k, f in fields.fields.items() if k.startswith("gpt2.")}
    assert meta == {"gpt2.context_length": 256, "gpt2.embedding_length": 128, "gpt2.block_count": 2,
                    "gpt2.feed_forward_length": 512, "gpt2.attention.head_count": 4, "gpt2.vocab_size": 512,
                    "gpt2.attention.layer_norm_epsilon": pytest.approx(1e-5)}
    assert fields.fields["tokenizer.ggml.eos_token_id"].contents() == tokenizer.eos_id
    assert fields.fields["tokenizer.ggml.add_bos_token"].contents() is False


def test_quantized_layers_are_exported_dequantised(tokenizer, tmp_path):
    from llmlab.quantize import dequantize_model, quantize_model_nf4

    model = _tiny("llama-tiny")
    quantize_model_nf4(model)
    path = export_gguf(model, tokenizer, tmp_path / "nf4.gguf", qtype="f32")
    idx = torch.tensor([tokenizer.encode(SAMPLE)])
    with torch.no_grad():
        torch.testing.assert_close(llmlab.load(path).model(idx), dequantize_model(model)(idx), atol=1e-5, rtol=1e-5)


def test_pre_tokenizer_names(tokenizer):
    def with_pattern(p):
        return Tokenizer(tokenizer.tokens, tokenizer.merges, p, tokenizer.special_tokens)

    assert llama_cpp_pre(tokenizer) == "llama-bpe"
    assert llama_cpp_pre(with_pattern(patterns.GPT2)) == "gpt-2"
    assert llama_cpp_pre(with_pattern(patterns.GPT2_SPLIT_DIGITS)) == "smollm"
    with pytest.raises(UserError, match="no llama.cpp pre-tokenizer"):
        llama_cpp_pre(with_pattern(r"\w+|\s+"))


@pytest.mark.parametrize("change, message", [
    (dict(preset="llama-tiny", norm="layernorm"), "matches no llama.cpp architecture"),
    (dict(preset="llama-tiny", rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                              "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
     "rope_scaling type 'llama3'"),
    (dict(preset="llama-tiny", bias=True), "bias=True"),
    (dict(preset="gpt2-tiny", n_kv_head=2), "n_kv_head=2"),
    (dict(preset="llama-tiny", n_embd=144, n_head=4, n_kv_head=2), "blocks of 32"),
])
def test_user_errors(change, message, tokenizer, tmp_path):
    model = _tiny(**change)
    with pytest.raises(UserError, match=message):
        export_gguf(model, tokenizer, tmp_path / "x.gguf", qtype="q4_0")
    assert not (tmp_path / "x.gguf").exists()


def test_unknown_qtype_and_foreign_vocabulary(tokenizer, tmp_path):
    with pytest.raises(UserError, match="qtype 'q3_0' is unknown"):
        export_gguf(_tiny("llama-tiny"), tokenizer, tmp_path / "x.gguf", qtype="q3_0")
    with pytest.raises(UserError, match="tokenizer has 512 tokens but the model only vocab_size=256"):
        export_gguf(_tiny("llama-tiny", vocab_size=256), tokenizer, tmp_path / "x.gguf")


@pytest.mark.slow
def test_smollm2_q8_0_reopens(tmp_path):
    smol = llmlab.load("smollm2-135m-instruct")
    path = export_gguf(smol.model, smol.tokenizer, tmp_path / "smol.gguf", qtype="q8_0")
    loaded = llmlab.load(path)
    ids = smol.tokenizer.encode("The capital of France is")
    with torch.no_grad():
        got, want = loaded.model(torch.tensor([ids])), gguf_roundtrip(smol.model, "q8_0")(torch.tensor([ids]))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert loaded.tokenizer.encode(SAMPLE) == smol.tokenizer.encode(SAMPLE)
    assert gguf.GGUFReader(path).fields["tokenizer.ggml.pre"].contents() == "smollm"


# ---- llama.cpp itself (skipped when llama-cpp-python is not installed; the real models are slow) -------

PROMPTS = ["The capital of France is", "def fibonacci(n):\n", "Once upon a time, there was a"]
N_NEW = 16
MARGIN = 1.0  # logits: a top-1 lead this large never flips under llama.cpp's activation rounding


def _llama_cpp(path: Path):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, logits_all=True, verbose=False)


def _llama_cpp_greedy(llm, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding by token ids: argmax of llama.cpp's last logits, fed back one token at a time."""
    llm.reset()
    llm.eval(prompt)
    out = []
    for _ in range(n):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval(out[-1:])
    return out


def _check_against_llama_cpp(path: Path, prompts: list[str], exact: bool) -> None:
    """llmlab on the file's weights (reopened by llmlab) vs llama.cpp on the same file.

    llama.cpp's tokenizer must give llmlab's ids. With float weights (exact=True) llama.cpp's greedy tokens
    must equal llmlab's. With Q8_0/Q4_0 weights llama.cpp also rounds the *activations* to Q8_0 blocks
    before each matmul (its integer dot products need both sides quantised), which moves SmolLM2's logits
    by up to ~1-4 (float16 weights: ~0.04), so near-ties flip and greedy sequences can part ways. Then:
    teacher-forced on llmlab's greedy continuation, llama.cpp's top-1 must agree wherever llmlab's top-1 leads
    by more than MARGIN, and at 85% of all positions.
    """
    from llmlab.infer.generate import generate

    ours = llmlab.load(path)
    llm = _llama_cpp(path)
    agree = total = 0
    for text in prompts:
        prompt = ours.tokenizer.encode(text)
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == prompt
        want = generate(ours.model, prompt, N_NEW, temperature=0.0)
        if exact:
            assert _llama_cpp_greedy(llm, prompt, N_NEW) == want, text
        ids = prompt + want
        llm.reset()
        llm.eval(ids)
        theirs = np.array(llm.scores[:len(ids)])  # (T, vocab)
        with torch.no_grad():
            logits = ours.model(torch.tensor([ids]))[0].numpy()  # (T, vocab)
        top2 = np.sort(logits, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > MARGIN
        same = theirs.argmax(1) == logits.argmax(1)
        assert same[clear].all(), (text, np.flatnonzero(clear & ~same))
        agree, total = agree + same.sum(), total + len(ids)
        if exact:
            assert np.abs(theirs - logits).max() < 0.2
    assert agree / total >= 0.85, f"top-1 agreement {agree}/{total}"


@pytest.mark.parametrize("case", list(CASES))
def test_llama_cpp_logits_match_on_tiny_models(case, tokenizer, tmp_path):
    """Every architecture the exporter writes runs in llama.cpp with llmlab's logits (random tiny weights)."""
    pytest.importorskip("llama_cpp")
    preset, overrides, _ = CASES[case]
    model = _tiny(preset, **overrides)
    ids = tokenizer.encode(SAMPLE)
    # q8_0: llama.cpp also rounds activations to Q8_0 (K-quants: to Q8_K), which moves logits a little
    qtypes = (("f32", 1e-3), ("q8_0", 0.05)) + ((("q6_k", 0.05), ("q4_k", 0.1)) if case == "llama-256" else ())
    for qtype, atol in qtypes:
        path = export_gguf(model, tokenizer, tmp_path / f"{qtype}.gguf", qtype=qtype)
        llm = _llama_cpp(path)
        llm.eval(ids)
        with torch.no_grad():
            want = llmlab.load(path).model(torch.tensor([ids]))[0].numpy()
        np.testing.assert_allclose(np.array(llm.scores[:len(ids)]), want, atol=atol, rtol=0)


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("llama_cpp")
    return llmlab.load("smollm2-135m-instruct")


@pytest.mark.slow
@pytest.mark.parametrize("qtype", ["q8_0", "q4_0", "f16", "q6_k", "q4_k"])
def test_llama_cpp_agrees_with_llmlab_on_smollm2(smollm2, qtype, tmp_path):
    path = export_gguf(smollm2.model, smollm2.tokenizer, tmp_path / f"smol.{qtype}.gguf", qtype=qtype)
    _check_against_llama_cpp(path, PROMPTS, exact=qtype == "f16")


@pytest.mark.slow
def test_llama_cpp_runs_a_speedrun_model_with_its_own_tokenizer(corpus_dir, tmp_path):
    pytest.importorskip("llama_cpp")
    from llmlab.recipes.speedrun import SpeedrunArgs, run

    out = tmp_path / "run"
    run(SpeedrunArgs(out=str(out), data=[str(corpus_dir)], vocab_size=512, max_minutes=1.5, samples=1,
                     sample_tokens=8, progress=False))
    trained = llmlab.load(out)
    prompts = ["def wrap(text, width=70):\n    ", "import os\n\n", SAMPLE[:60]]
    for qtype in ("f32", "q8_0", "q4_0"):
        path = export_gguf(trained.model, trained.tokenizer, tmp_path / f"speedrun.{qtype}.gguf", qtype=qtype)
        _check_against_llama_cpp(path, prompts, exact=qtype == "f32")


@pytest.mark.parametrize("pattern", ["gpt4", "gpt2", "gpt2-digits"])
def test_llama_cpp_tokenizes_like_llmlab(pattern, tmp_path):
    """The pre-tokenizer name picks llama.cpp's split regex: the same ids on real code and odd text."""
    llama_cpp = pytest.importorskip("llama_cpp")
    text = "".join((STDLIB / name).read_text() for name in ("textwrap.py", "shlex.py", "bisect.py"))
    odd = "Hi!!  \t\n\n\r\n  x 123456789 1,000.5 I'm you'LL WE'RE héllo ñ 日本語 🤖\u00a0nbsp  end   "
    tok = Tokenizer.train(text[:50_000], 1024, pattern=pattern)
    path = export_gguf(_tiny("gpt2-tiny", vocab_size=1024), tok, tmp_path / "t.gguf", qtype="f32")
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    for sample in (text, odd, SAMPLE):
        assert llm.tokenize(sample.encode(), add_bos=False, special=False) == tok.encode(sample)
