"""GGUF -> llmlab: metadata to `ModelConfig`, quantised tensors to float, llama.cpp names to ours.

The `gguf` package only reads the file (header, metadata, raw tensor bytes);
turning blocks of quantised bytes back into floats is written out here, one
small function per format, following ggml's reference `dequantize_row_*`:

- legacy blocks of 32 weights: Q8_0 (w = d*q), Q4_0 (w = d*(q-8)), Q4_1 (w = d*q + m),
  Q5_0 and Q5_1 (a fifth bit per weight kept apart in `qh`);
- K-quants, super-blocks of 256 weights in 8 or 16 sub-blocks, each sub-block with
  its own 4-8 bit scale (and min) that themselves are scaled by the block's
  float16 `d` (and `dmin`): Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.

Every function takes the raw bytes as uint8 (n_blocks, block_bytes) and returns
float32 (n_blocks, block_weights). GGUF lists dimensions innermost first, so a
(out, in) torch weight is stored as [in, out]. llama.cpp's converter permutes the
rows of Llama's q/k weights so RoPE rotates adjacent channel pairs (interleaved);
llmlab (like HF) rotates channel i with i + D/2, so `unpermute_rope` undoes it.
The embedded tokenizer is `llmlab.tokenizer`'s job; this file knows nothing about text.
"""

from pathlib import Path

import numpy as np
import torch

from llmlab.common.errors import UserError
from llmlab.models.config import ModelConfig

QK, QK_K = 32, 256  # weights per block: legacy formats, K-quants


def _f16(blocks: np.ndarray, start: int, count: int = 1) -> np.ndarray:
    """Bytes [start, start + 2*count) of every block as float32, shape (n, count)."""
    return blocks[:, start:start + 2 * count].copy().view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """Bytes (n, k) -> their 4-bit halves (n, 2k): all low nibbles first, then all high ones."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def dequant_q8_0(b: np.ndarray) -> np.ndarray:  # d:f16, qs:int8[32]
    return _f16(b, 0) * b[:, 2:].view(np.int8).astype(np.float32)


def dequant_q4_0(b: np.ndarray) -> np.ndarray:  # d:f16, qs:u8[16] (weight j in the low nibble of byte j%16)
    return _f16(b, 0) * (_nibbles(b[:, 2:]).astype(np.float32) - 8)


def dequant_q4_1(b: np.ndarray) -> np.ndarray:  # d:f16, m:f16, qs:u8[16]
    return _f16(b, 0) * _nibbles(b[:, 4:]).astype(np.float32) + _f16(b, 2)


def _fifth_bits(qh: np.ndarray) -> np.ndarray:
    """qh bytes (n, 4), a little-endian uint32 per block -> bit j of it for weight j, (n, 32)."""
    bits = qh.copy().view("<u4")  # (n, 1)
    return ((bits >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)


def dequant_q5_0(b: np.ndarray) -> np.ndarray:  # d:f16, qh:u32, qs:u8[16]
    q = _nibbles(b[:, 6:]) | (_fifth_bits(b[:, 2:6]) << 4)
    return _f16(b, 0) * (q.astype(np.float32) - 16)


def dequant_q5_1(b: np.ndarray) -> np.ndarray:  # d:f16, m:f16, qh:u32, qs:u8[16]
    q = _nibbles(b[:, 8:]) | (_fifth_bits(b[:, 4:8]) << 4)
    return _f16(b, 0) * q.astype(np.float32) + _f16(b, 2)


def _scale_min_k4(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K: 12 bytes (n, 12) packing 8 six-bit scales and 8 six-bit mins -> two (n, 8) arrays.

    Sub-blocks 0-3 use the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); sub-blocks 4-7 take
    their low 4 bits from bytes 8-11 and their top 2 bits from the spare top bits of bytes 0-7.
    """
    lo_sc, lo_m = s[:, 0:4] & 63, s[:, 4:8] & 63
    hi_sc = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    hi_m = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return (np.concatenate([lo_sc, hi_sc], -1).astype(np.float32),
            np.concatenate([lo_m, hi_m], -1).astype(np.float32))


def _k_low_high(qs: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K nibbles: 32 bytes per pair of sub-blocks, low nibbles then high ones -> (n, 8, 32)."""
    pairs = qs.reshape(-1, 4, 1, 32)  # (n, pair, 1, 32)
    return np.concatenate([pairs & 0x0F, pairs >> 4], axis=2).reshape(-1, 8, 32)


def dequant_q4_k(b: np.ndarray) -> np.ndarray:  # d:f16, dmin:f16, scales:u8[12], qs:u8[128]
    sc, m = _scale_min_k4(b[:, 4:16])  # (n, 8) each
    q = _k_low_high(b[:, 16:]).astype(np.float32)  # (n, 8, 32)
    y = (_f16(b, 0) * sc)[..., None] * q - (_f16(b, 2) * m)[..., None]
    return y.reshape(-1, QK_K)


def dequant_q5_k(b: np.ndarray) -> np.ndarray:  # d, dmin, scales[12], qh:u8[32], qs:u8[128]
    sc, m = _scale_min_k4(b[:, 4:16])
    qh = b[:, 16:48]  # bit s of qh[l] is the fifth bit of weight l in sub-block s
    high = (qh[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1  # (n, 8, 32)
    q = (_k_low_high(b[:, 48:]) | (high << 4)).astype(np.float32)
    y = (_f16(b, 0) * sc)[..., None] * q - (_f16(b, 2) * m)[..., None]
    return y.reshape(-1, QK_K)


def _crumbs(qs: np.ndarray) -> np.ndarray:
    """Q2_K/Q3_K: 2-bit values. qs (n, 64) holds two halves of 32 bytes; shift 2j gives group j.

    -> (n, 2 halves, 4 groups, 32): weight 128*half + 32*group + l is (qs[32*half + l] >> 2*group) & 3.
    """
    halves = qs.reshape(-1, 2, 1, 32)
    return (halves >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3


def dequant_q2_k(b: np.ndarray) -> np.ndarray:  # scales:u8[16], qs:u8[64], d:f16, dmin:f16
    scales = b[:, :16]  # low nibble: scale, high nibble: min, one per 16 weights
    d, dmin = _f16(b, 80), _f16(b, 82)
    q = _crumbs(b[:, 16:80]).reshape(-1, 16, 16).astype(np.float32)  # (n, sub-block, 16)
    y = (d * (scales & 0x0F))[..., None] * q - (dmin * (scales >> 4))[..., None]
    return y.reshape(-1, QK_K)


def _q3_k_scales(s: np.ndarray) -> np.ndarray:
    """Q3_K: 12 bytes -> 16 six-bit scales: low 4 bits from bytes 0-7, top 2 bits from bytes 8-11."""
    k = np.arange(16)
    low = (s[:, k % 8] >> (4 * (k // 8))).astype(np.uint8) & 0x0F
    high = (s[:, 8 + k % 4] >> (2 * (k // 4))).astype(np.uint8) & 3
    return (low | (high << 4)).astype(np.float32) - 32


def dequant_q3_k(b: np.ndarray) -> np.ndarray:  # hmask:u8[32], qs:u8[64], scales:u8[12], d:f16
    hmask, sc, d = b[:, :32], _q3_k_scales(b[:, 96:108]), _f16(b, 108)
    low = _crumbs(b[:, 32:96]).astype(np.int8)  # (n, 2, 4, 32)
    # the third bit of weight 128*half + 32*group + l is bit (4*half + group) of hmask[l]; unset means -4
    bit = np.arange(8, dtype=np.uint8).reshape(1, 2, 4, 1)
    high = (hmask[:, None, None, :] >> bit) & 1
    q = (low - 4 * (1 - high).astype(np.int8)).reshape(-1, 16, 16).astype(np.float32)
    return ((d * sc)[..., None] * q).reshape(-1, QK_K)


def dequant_q6_k(b: np.ndarray) -> np.ndarray:  # ql:u8[128], qh:u8[64], scales:i8[16], d:f16
    ql = b[:, :128].reshape(-1, 2, 2, 32)  # (n, half, 2, 32)
    qh = b[:, 128:192].reshape(-1, 2, 1, 32)  # (n, half, 1, 32)
    sc = b[:, 192:208].view(np.int8).astype(np.float32)  # (n, 16)
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=2)  # (n, half, 4 groups, 32)
    high = (qh >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3
    q = (low | (high << 4)).astype(np.float32) - 32
    y = (_f16(b, 208) * sc)[..., None] * q.reshape(-1, 16, 16)
    return y.reshape(-1, QK_K)


# ggml type name -> (weights per block, bytes per block, dequantiser)
QUANTS = {
    "Q8_0": (QK, 34, dequant_q8_0), "Q4_0": (QK, 18, dequant_q4_0), "Q4_1": (QK, 20, dequant_q4_1),
    "Q5_0": (QK, 22, dequant_q5_0), "Q5_1": (QK, 24, dequant_q5_1),
    "Q2_K": (QK_K, 84, dequant_q2_k), "Q3_K": (QK_K, 110, dequant_q3_k), "Q4_K": (QK_K, 144, dequant_q4_k),
    "Q5_K": (QK_K, 176, dequant_q5_k), "Q6_K": (QK_K, 210, dequant_q6_k),
}
FLOATS = {"F32": np.float32, "F16": np.float16}


def dequantize(raw: np.ndarray, type_name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Raw tensor bytes of a ggml type -> float32 torch tensor of `shape` (torch order, outermost first)."""
    n = int(np.prod(shape))
    if type_name in FLOATS:
        arr = np.frombuffer(raw, dtype=FLOATS[type_name], count=n).astype(np.float32)
    elif type_name == "BF16":  # the top half of a float32
        arr = (np.frombuffer(raw, dtype=np.uint16, count=n).astype(np.uint32) << 16).view(np.float32)
    elif type_name in QUANTS:
        per_block, nbytes, fn = QUANTS[type_name]
        blocks = np.frombuffer(raw, dtype=np.uint8, count=n // per_block * nbytes).reshape(-1, nbytes)
        arr = fn(blocks)
    else:
        raise UserError(f"GGUF tensor type {type_name} is not supported; llmlab reads F32, F16, BF16, "
                        f"{', '.join(QUANTS)}")
    return torch.from_numpy(np.ascontiguousarray(arr).reshape(shape))


def unpermute_rope(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row order: per head, rows (0, D/2, 1, D/2+1, ...) back to (0, 1, ..., D-1).

    llama.cpp wrote w.view(H, 2, D/2, C).transpose(1, 2) (pairs interleaved); this reads it back.
    """
    out_dim = w.shape[0]
    D = out_dim // n_head
    return w.reshape(n_head, D // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)  # (H, 2, D/2, C) order


ARCHS = ("llama", "qwen2", "gpt2")
# GGUF name -> llmlab name; {i} is the layer index
KEYS = {
    "token_embd.weight": "tok_emb.weight", "position_embd.weight": "pos_emb.weight",
    "output_norm.weight": "norm_f.weight", "output_norm.bias": "norm_f.bias", "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "blocks.{i}.attn_norm.weight", "blk.{i}.attn_norm.bias": "blocks.{i}.attn_norm.bias",
    "blk.{i}.ffn_norm.weight": "blocks.{i}.mlp_norm.weight", "blk.{i}.ffn_norm.bias": "blocks.{i}.mlp_norm.bias",
    **{f"blk.{{i}}.attn_{g}.{w}": f"blocks.{{i}}.attn.{o}.{w}"
       for g, o in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("output", "o_proj"), ("qkv", "qkv"))
       for w in ("weight", "bias")},
    **{f"blk.{{i}}.ffn_{g}.{w}": f"blocks.{{i}}.mlp.{g}_proj.{w}"
       for g in ("gate", "up", "down") for w in ("weight", "bias")},
}


def _field(fields: dict, key: str, default=None):
    f = fields.get(key)
    if f is None:
        return default
    value = f.contents()
    return value


def config_from_gguf(fields: dict, source: str) -> ModelConfig:
    """Map `{arch}.*` metadata to a ModelConfig; unsupported options name the key."""
    arch = _field(fields, "general.architecture")
    if arch not in ARCHS:
        raise UserError(f"{source}: general.architecture={arch!r} is not supported; llmlab loads "
                        f"{', '.join(ARCHS)}")
    get = lambda key, default=None: _field(fields, f"{arch}.{key}", default)  # noqa: E731
    n_embd, n_head = int(get("embedding_length")), int(get("attention.head_count"))
    common = dict(seq_len=int(get("context_length")), n_layer=int(get("block_count")), n_head=n_head,
                  n_embd=n_embd, intermediate_size=int(get("feed_forward_length")), extra={"gguf_arch": arch})
    vocab = get("vocab_size") or len(fields["tokenizer.ggml.tokens"].data)
    if arch == "gpt2":
        return ModelConfig(vocab_size=int(vocab), pos="learned", norm="layernorm", mlp="gelu", bias=True,
                           norm_eps=float(get("attention.layer_norm_epsilon", 1e-5)), tie_embeddings=True,
                           **common)
    scaling = get("rope.scaling.type")
    if scaling not in (None, "none"):
        if scaling != "linear":
            raise UserError(f"{source}: {arch}.rope.scaling.type={scaling!r} is not supported; use none or linear")
        scaling = {"rope_type": "linear", "factor": float(get("rope.scaling.factor"))}
    else:
        scaling = None
    head_dim = get("attention.key_length") or get("rope.dimension_count") or n_embd // n_head
    return ModelConfig(vocab_size=int(vocab), pos="rope", norm="rmsnorm", mlp="swiglu", bias=False,
                       qkv_bias=arch == "qwen2", n_kv_head=int(get("attention.head_count_kv", n_head)),
                       head_dim=int(head_dim), rope_theta=float(get("rope.freq_base", 10000.0)),
                       rope_scaling=scaling, norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
                       tie_embeddings=True, **common)


def _our_name(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] == "blk" and len(parts) > 2:
        key = ".".join(["blk", "{i}", *parts[2:]])
        return KEYS[key].replace("{i}", parts[1]) if key in KEYS else None
    return KEYS.get(name)


def open_gguf(path: str | Path):
    """A `gguf.GGUFReader` for path, or a one-line UserError for a missing, foreign or truncated file."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such GGUF file")
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise UserError(f"{path}: not a GGUF file (it does not start with the bytes 'GGUF')")
    try:
        return gguf.GGUFReader(path)
    except Exception as e:  # the reader raises assorted errors on a cut-off file
        raise UserError(f"{path}: truncated or corrupt GGUF file ({type(e).__name__}: {e}); "
                        "download it again") from None


def gguf_tensors(path: str | Path, reader=None, progress: bool = True):
    """(config, a lazy stream of (llmlab name, float32 tensor)): tensors are dequantised one at a time as the
    stream is read, from the reader's memory map, so the file is never in memory as floats all at once."""
    reader = reader or open_gguf(path)
    config = config_from_gguf(reader.fields, str(path))
    config.tie_embeddings = not any(t.name == "output.weight" for t in reader.tensors)
    return config, _tensors(path, reader, config, progress)


def _tensors(path: str | Path, reader, config: ModelConfig, progress: bool):
    from tqdm import tqdm

    arch = config.extra["gguf_arch"]
    for t in tqdm(reader.tensors, desc=f"dequantising {Path(path).name}", disable=not progress, leave=False):
        name = _our_name(t.name)
        if name is None:
            raise UserError(f"{path}: unexpected tensor {t.name!r}; this {arch} variant is not supported")
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))  # GGUF lists the innermost dimension first
        w = dequantize(t.data, t.tensor_type.name, shape)
        if arch == "llama" and name.endswith(("q_proj.weight", "q_proj.bias")):
            w = unpermute_rope(w, config.n_head)
        elif arch == "llama" and name.endswith(("k_proj.weight", "k_proj.bias")):
            w = unpermute_rope(w, config.n_kv_head)
        if name.endswith(("attn.qkv.weight", "attn.qkv.bias")):  # GPT-2 stores q, k, v as one matrix
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), w.chunk(3, dim=0), strict=True):
                yield name.replace("qkv", part), chunk.contiguous()
            continue
        yield name, w


def load_gguf(path: str | Path, reader=None, progress: bool = True) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The config and float32 llmlab state dict of a GGUF model file."""
    config, tensors = gguf_tensors(path, reader, progress)
    sd = dict(tensors)
    if config.tie_embeddings:
        sd["lm_head.weight"] = sd["tok_emb.weight"]
    return config, sd
