"""llmlab -> GGUF: a file llama.cpp loads and runs, with the tokenizer and chat template inside.

`export_gguf(model, tokenizer, path, qtype)` writes one GGUF file (Gerganov et al., the
ggml project; spec: github.com/ggml-org/ggml/blob/master/docs/gguf.md). What the lesson is:

- the architecture: GPT-2 shapes become llama.cpp's "gpt2" (q, k, v fused into one
  `attn_qkv` matrix), Llama shapes "llama", and Llama shapes with q/k/v biases (Qwen2)
  "qwen2"; every option llama.cpp cannot express is a one-line UserError (`gguf_arch`);
- the metadata llama.cpp reads: `{arch}.context_length`, `.embedding_length`,
  `.block_count`, `.feed_forward_length`, `.attention.head_count(_kv)`, the norm's epsilon,
  `.rope.freq_base`, `.rope.dimension_count`, `.vocab_size` (see `model_metadata`);
- tensor names (`blk.{i}.attn_q.weight` ...: `models.gguf.KEYS`, read backwards) and one
  layout change: llama.cpp's "llama" rotates *adjacent* channel pairs with RoPE, llmlab
  and Hugging Face rotate channel i with i + D/2, so q and k rows are permuted per head
  (`permute_rope`, the inverse of `models.gguf.unpermute_rope`). "qwen2" rotates the
  halves like we do and needs no permutation;
- which tensors are quantised: 2-D matrices (token embedding and head included), while
  norms, biases, 1-D tensors and GPT-2's position table stay float32, as llama.cpp's
  converter keeps them. A tied head is not written: llama.cpp reuses `token_embd`;
- the tokenizer (`tokenizer_metadata`): byte-level BPE ("gpt2"), tokens as GPT-2's
  printable byte strings, merges "a b" in priority order, special tokens marked CONTROL,
  and `tokenizer.ggml.pre`, the name llama.cpp knows for the split regex (`LLAMA_CPP_PRE`).

The block formats themselves are in `gguf_quants.py`; the container bytes are written by
the `gguf` package's GGUFWriter. `llmlab.load(file.gguf)` reads the result back
(`models.gguf`), and llama.cpp runs it (tests/quantize/test_gguf_export.py checks both).
Example: `export_gguf(model, tok, "model.q8_0.gguf", qtype="q8_0")`, then
`llama-cli -m model.q8_0.gguf`.
"""

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from llmlab.common.errors import UserError
from llmlab.common.io import atomic_write
from llmlab.models.config import ModelConfig
from llmlab.models.gguf import KEYS, dequantize
from llmlab.quantize.gguf_quants import K_FALLBACK, QK_K, QUANTIZERS
from llmlab.quantize.linear import QuantizedLinear, dequantize_model
from llmlab.tokenizer import patterns
from llmlab.tokenizer.formats import bytes_to_token

# qtype -> (ggml tensor type of the quantised matrices, general.file_type: llama.cpp's LLAMA_FTYPE_*)
QTYPES = {"f32": ("F32", 0), "f16": ("F16", 1), "q4_0": ("Q4_0", 2), "q8_0": ("Q8_0", 7), "q4_k": ("Q4_K", 14),
          "q6_k": ("Q6_K", 18)}
# split regex -> llama.cpp pre-tokenizer name with the same split (llama-vocab.cpp). GPT-4's pattern and
# Llama 3's split text identically (possessive `?+`/`++` never give anything back there), so both are llama-bpe.
LLAMA_CPP_PRE = {patterns.GPT2: "gpt-2", patterns.GPT2_SPLIT_DIGITS: "smollm", patterns.GPT4: "llama-bpe",
                 patterns.LLAMA3: "llama-bpe", patterns.QWEN2: "qwen2"}
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_UNUSED = 1, 3, 5  # gguf.TokenType
OURS_TO_GGUF = {ours: theirs for theirs, ours in KEYS.items()}


def gguf_arch(config: ModelConfig) -> str:
    """The llama.cpp architecture for a config: "gpt2", "llama" or "qwen2"; UserError naming the field if none."""
    for name, value, plain in (("n_expert", config.n_expert, 0), ("norm_placement", config.norm_placement, "pre"),
                               ("qk_norm", config.qk_norm, "none"), ("emb_norm", config.emb_norm, False),
                               ("o_bias", config.o_bias, config.bias)):
        if value != plain:
            raise UserError(f"GGUF export: {name}={value!r} is not supported; llmlab exports gpt2, llama and "
                            "qwen2 shapes only")
    if config.pos == "learned" and config.norm == "layernorm" and config.mlp == "gelu":
        for ok, what in ((config.bias and config.qkv_bias, "bias=False: llama.cpp's gpt2 needs every bias"),
                         (config.n_kv_head == config.n_head, f"n_kv_head={config.n_kv_head}: gpt2 has no GQA"),
                         (config.head_dim * config.n_head == config.n_embd,
                          f"head_dim={config.head_dim}: gpt2 needs n_head * head_dim == n_embd")):
            if not ok:
                raise UserError(f"GGUF export: {what}")
        return "gpt2"
    if config.pos == "rope" and config.norm == "rmsnorm" and config.mlp == "swiglu":
        if config.bias:
            raise UserError("GGUF export: bias=True on a Llama-shaped model is not supported; llmlab exports "
                            "Llama and Qwen2 shapes (bias=False, optionally qkv_bias=True)")
        kind = (config.rope_scaling or {}).get("rope_type", (config.rope_scaling or {}).get("type", "default"))
        if kind not in ("default", "linear"):
            raise UserError(f"GGUF export: rope_scaling type {kind!r} is not supported; llama.cpp stores it as "
                            "a rope_freqs tensor that llmlab does not write yet (use default or linear)")
        if config.qkv_bias and config.head_dim * config.n_head != config.n_embd:
            raise UserError(f"GGUF export: head_dim={config.head_dim} with qkv_bias: llama.cpp's qwen2 needs "
                            "n_head * head_dim == n_embd")
        return "qwen2" if config.qkv_bias else "llama"
    raise UserError(f"GGUF export: pos={config.pos!r}, norm={config.norm!r}, mlp={config.mlp!r} matches no "
                    "llama.cpp architecture (gpt2: learned/layernorm/gelu, llama: rope/rmsnorm/swiglu)")


def model_metadata(config: ModelConfig, arch: str) -> dict[str, int | float | str]:
    """`{arch}.*` keys llama.cpp reads to build the graph (ints are written as uint32, floats as float32)."""
    meta = {"context_length": config.seq_len, "embedding_length": config.n_embd, "block_count": config.n_layer,
            "feed_forward_length": config.intermediate_size, "attention.head_count": config.n_head,
            "vocab_size": config.vocab_size}
    if arch == "gpt2":
        meta["attention.layer_norm_epsilon"] = float(config.norm_eps)
    else:
        meta.update({"attention.head_count_kv": config.n_kv_head, "rope.freq_base": float(config.rope_theta),
                     "attention.layer_norm_rms_epsilon": float(config.norm_eps),
                     "rope.dimension_count": config.head_dim})
        if config.head_dim * config.n_head != config.n_embd:  # llama.cpp assumes n_embd / n_head otherwise
            meta.update({"attention.key_length": config.head_dim, "attention.value_length": config.head_dim})
        if config.rope_scaling:  # linear: positions divided by factor (llama.cpp: freq_scale = 1 / factor)
            meta.update({"rope.scaling.type": "linear", "rope.scaling.factor": float(config.rope_scaling["factor"])})
    return {f"{arch}.{k}": v for k, v in meta.items()}


def llama_cpp_pre(tokenizer) -> str:
    """`tokenizer.ggml.pre` for the tokenizer's split regex, or a UserError when llama.cpp has none like it."""
    if tokenizer.pattern not in LLAMA_CPP_PRE:
        raise UserError(f"GGUF export: tokenizer {tokenizer.name}: its split pattern has no llama.cpp "
                        "pre-tokenizer (llama.cpp knows GPT-2's, GPT-4/Llama 3's, SmolLM2's and Qwen2's)")
    return LLAMA_CPP_PRE[tokenizer.pattern]


def tokenizer_metadata(tokenizer, vocab_size: int) -> dict[str, object]:
    """`tokenizer.*` keys; the vocabulary is padded to the model's `vocab_size` with unused "[PAD{i}]" tokens.

    Token b" hello" is written "Ġhello", merge (b" h", b"ello") as "Ġh ello", "<|endoftext|>" as itself (CONTROL).
    """
    if tokenizer.vocab_size > vocab_size:
        raise UserError(f"GGUF export: tokenizer has {tokenizer.vocab_size} tokens but the model only "
                        f"vocab_size={vocab_size} embeddings; is it the model's tokenizer?")
    special = {i: s for s, i in tokenizer.special_tokens.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        b = tokenizer.tokens[i] if i < tokenizer.vocab_size else b""
        if i in special:
            tokens.append(special[i])
            types.append(TOKEN_CONTROL)
        elif b:
            tokens.append(bytes_to_token(b))  # "Ġhello" for b" hello": no spaces or control bytes in the file
            types.append(TOKEN_NORMAL)
        else:  # an id no text maps to (a padded vocabulary)
            tokens.append(f"[PAD{i}]")
            types.append(TOKEN_UNUSED)
    meta: dict[str, object] = {
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": llama_cpp_pre(tokenizer),
        "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": [f"{bytes_to_token(tokenizer.tokens[a])} {bytes_to_token(tokenizer.tokens[b])}"
                                  for a, b, _ in tokenizer.merges],
        "tokenizer.ggml.add_bos_token": False,  # llama-bpe would otherwise prepend bos; llmlab models never saw it
    }
    for key, value in (("bos", tokenizer.bos_id), ("eos", tokenizer.eos_id)):
        if value is not None:
            meta[f"tokenizer.ggml.{key}_token_id"] = value
    if "<|pad|>" in tokenizer.special_tokens or tokenizer.eos_id is not None:
        meta["tokenizer.ggml.padding_token_id"] = tokenizer.pad_id
    if tokenizer.chat_template:
        meta["tokenizer.chat_template"] = tokenizer.chat_template
    return meta


def permute_rope(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Per head, rows (0, 1, ..., D-1) -> (0, D/2, 1, D/2+1, ...): halves-rotation to llama.cpp's pairs.

    w (H*D, C) -> view (H, 2, D/2, C) -> swap to (H, D/2, 2, C); `models.gguf.unpermute_rope` undoes it.
    """
    D = w.shape[0] // n_head
    return w.reshape(n_head, 2, D // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def float_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as float32, quantised layers (`QuantizedLinear`) dequantised to `.weight`."""
    sd = {k: v for k, v in model.state_dict().items()}
    for name, module in model.named_modules():
        if isinstance(module, QuantizedLinear):
            sd = {k: v for k, v in sd.items() if not k.startswith(name + ".") or k == f"{name}.bias"}
            sd[f"{name}.weight"] = module.dequantize(torch.float32)
    return {k: v.detach().float().cpu() for k, v in sd.items()}


def gguf_name(name: str) -> str:
    """llmlab weight name -> llama.cpp's: "blocks.3.attn.q_proj.weight" -> "blk.3.attn_q.weight"."""
    parts = name.split(".")
    key = ".".join(["blocks", "{i}", *parts[2:]]) if parts[0] == "blocks" else name
    if key not in OURS_TO_GGUF:
        raise UserError(f"GGUF export: weight {name!r} has no llama.cpp tensor name")
    return OURS_TO_GGUF[key].replace("{i}", parts[1])


def gguf_tensors(model: nn.Module, arch: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(GGUF name, float32 tensor in torch order) for every tensor the file holds, in llama.cpp's layout."""
    config: ModelConfig = model.config
    sd = float_state_dict(model)
    if config.tie_embeddings:
        sd.pop("lm_head.weight")
    for i in range(config.n_layer):
        attn = f"blocks.{i}.attn"
        if arch == "gpt2":  # one (3C, C) matrix and (3C,) bias: q rows, then k, then v
            for w in ("weight", "bias"):
                sd[f"{attn}.qkv.{w}"] = torch.cat([sd.pop(f"{attn}.{p}.{w}") for p in ("q_proj", "k_proj", "v_proj")])
        elif arch == "llama":
            sd[f"{attn}.q_proj.weight"] = permute_rope(sd[f"{attn}.q_proj.weight"], config.n_head)
            sd[f"{attn}.k_proj.weight"] = permute_rope(sd[f"{attn}.k_proj.weight"], config.n_kv_head)
    for name, tensor in sd.items():
        yield gguf_name(name), tensor


def tensor_type(gguf_name: str, tensor: torch.Tensor, qtype: str) -> str:
    """The ggml type a tensor is stored as: matrices get qtype's, the rest (norms, biases, positions) F32."""
    if tensor.dim() != 2 or gguf_name == "position_embd.weight":
        return "F32"
    ggml_type = QTYPES[qtype][0]
    if ggml_type in K_FALLBACK and tensor.shape[1] % QK_K:
        return K_FALLBACK[ggml_type]  # rows of e.g. 576 weights do not split into super-blocks of 256
    return ggml_type


def encode_tensor(gguf_name: str, tensor: torch.Tensor, ggml_type: str) -> np.ndarray:
    """Float tensor -> the array GGUFWriter stores: float32/float16 values, or uint8 rows of blocks."""
    x = tensor.numpy()
    if ggml_type == "F32":
        return x.astype(np.float32)
    if ggml_type == "F16":
        return x.astype(np.float16)
    return QUANTIZERS[ggml_type](x, name=gguf_name)


def check_qtype(qtype: str) -> str:
    if qtype.lower() not in QTYPES:
        raise UserError(f"qtype {qtype!r} is unknown; choose one of {', '.join(QTYPES)}")
    return qtype.lower()


def _add_metadata(writer, meta: dict[str, object]) -> None:
    for key, value in meta.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, value)  # lists of str (tokens, merges) or int (token types)


def export_gguf(model: nn.Module, tokenizer, path: str | Path, qtype: str = "q8_0", name: str | None = None,
                progress: bool = False) -> Path:
    """Write `model` and `tokenizer` to one GGUF file at `path` (atomically) and return the path.

    qtype: "f32", "f16", "q8_0", "q4_0", "q6_k" or "q4_k", the type of every weight matrix; the rest stays
    float32. A K-quant matrix whose rows are not a multiple of 256 is stored as Q8_0 (q6_k) or Q4_0 (q4_k).
    """
    import gguf
    from tqdm import tqdm

    qtype, path = check_qtype(qtype), Path(path)
    arch = gguf_arch(model.config)
    meta: dict[str, object] = {"general.name": name or path.stem, "general.file_type": QTYPES[qtype][1]}
    if qtype.startswith("q"):
        meta["general.quantization_version"] = 2  # GGML_QNT_VERSION: the block layouts of today
    meta |= model_metadata(model.config, arch) | tokenizer_metadata(tokenizer, model.config.vocab_size)
    tensors = []
    for tname, tensor in tqdm(list(gguf_tensors(model, arch)), desc="quantising", disable=not progress):
        ggml_type = tensor_type(tname, tensor, qtype)
        tensors.append((tname, encode_tensor(tname, tensor, ggml_type), gguf.GGMLQuantizationType[ggml_type]))

    def write(tmp: str) -> None:
        writer = gguf.GGUFWriter(tmp, arch)
        _add_metadata(writer, meta)
        for tname, data, ggml_type in tensors:
            writer.add_tensor(tname, data, raw_dtype=ggml_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=progress)
        writer.close()

    atomic_write(path, write)
    return path


@torch.no_grad()
def gguf_roundtrip(model: nn.Module, qtype: str) -> nn.Module:
    """A float copy of `model` holding the weights a `qtype` GGUF file gives back (quantised, then
    dequantised by `models.gguf`): measure the damage without writing the file or running llama.cpp.

    Permuting rows (RoPE) or stacking them (GPT-2's qkv) commutes with row-wise blocks, so llmlab's
    own layout is quantised directly.
    """
    qtype = check_qtype(qtype)
    gguf_arch(model.config)
    sd = float_state_dict(model)
    tied = model.config.tie_embeddings
    for name, tensor in sd.items():
        ggml_type = tensor_type(gguf_name(name), tensor, qtype)
        if ggml_type != "F32" and not (tied and name == "lm_head.weight"):
            raw = np.ascontiguousarray(encode_tensor(name, tensor, ggml_type))
            sd[name] = dequantize(raw, ggml_type, tuple(tensor.shape))
    if tied:  # one matrix under two names, as llama.cpp reuses token_embd for the head
        sd["lm_head.weight"] = sd["tok_emb.weight"]
    out = dequantize_model(copy.deepcopy(model)).float()
    out.load_state_dict(sd, strict=True)
    return out.eval()
