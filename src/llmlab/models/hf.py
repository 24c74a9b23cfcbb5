"""Hugging Face <-> llmlab: config fields and weight names, both directions.

The only file that knows HF's names. GPT-2 stores its linear layers as Conv1D
(weights transposed, q/k/v fused into one `c_attn`); Llama, Mistral and Qwen2
use plain Linear layers with names close to ours. Loading directories, shards
and hubs is `llmlab.models.pretrained`'s job; this file maps dicts only.
"""

import re
from typing import Any

import torch

from llmlab.common.errors import UserError
from llmlab.models.config import ModelConfig

LLAMA_LIKE = ("llama", "mistral", "qwen2", "smollm", "smollm2")


def _rope_settings(hf: dict[str, Any]) -> tuple[float, dict | None]:
    """rope_theta and scaling, from transformers 4 (`rope_theta`, `rope_scaling`) or 5 (`rope_parameters`)."""
    params = hf.get("rope_parameters") or {}
    theta = hf.get("rope_theta", params.get("rope_theta", 10000.0))
    scaling = hf.get("rope_scaling") or (params if params.get("rope_type", "default") != "default" else None)
    if scaling is not None:
        scaling = {k: v for k, v in scaling.items() if k != "rope_theta"}
        if scaling.get("rope_type", scaling.get("type")) == "default":
            scaling = None
    return float(theta), scaling


def config_from_hf(hf: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """Map a HF `config.json` dict to a ModelConfig; unsupported options name the field."""
    model_type = hf.get("model_type")
    if model_type == "gpt2":
        act = hf.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise UserError(f"{source}: activation_function={act!r} is not supported (GPT-2 uses gelu_new)")
        return ModelConfig(vocab_size=hf["vocab_size"], seq_len=hf.get("n_positions", 1024), n_layer=hf["n_layer"],
                           n_head=hf["n_head"], n_embd=hf["n_embd"], intermediate_size=hf.get("n_inner"),
                           pos="learned", norm="layernorm", norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                           mlp="gelu", bias=True, tie_embeddings=hf.get("tie_word_embeddings", True))
    if model_type in LLAMA_LIKE:
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise UserError(f"{source}: hidden_act={act!r} is not supported (Llama-family models use silu)")
        if hf.get("mlp_bias"):
            raise UserError(f"{source}: mlp_bias=true is not supported")
        seq_len = hf.get("max_position_embeddings", 2048)
        window = hf.get("sliding_window") if hf.get("use_sliding_window", model_type == "mistral") else None
        if window and window < seq_len:  # attention past the window would differ: cap the context instead
            seq_len = window
        theta, scaling = _rope_settings(hf)
        qkv_bias = True if model_type == "qwen2" else bool(hf.get("attention_bias", False))
        return ModelConfig(vocab_size=hf["vocab_size"], seq_len=seq_len, n_layer=hf["num_hidden_layers"],
                           n_head=hf["num_attention_heads"],
                           n_kv_head=hf.get("num_key_value_heads") or hf["num_attention_heads"],
                           n_embd=hf["hidden_size"], head_dim=hf.get("head_dim"),
                           intermediate_size=hf["intermediate_size"], pos="rope", rope_theta=theta,
                           rope_scaling=scaling, norm="rmsnorm", norm_eps=hf.get("rms_norm_eps", 1e-6), mlp="swiglu",
                           bias=False, qkv_bias=qkv_bias, tie_embeddings=hf.get("tie_word_embeddings", False),
                           extra={"model_type": model_type})
    raise UserError(f"{source}: model_type={model_type!r} is not supported; llmlab loads gpt2 and "
                    f"Llama-family models ({', '.join(LLAMA_LIKE)})")


def hf_family(config: ModelConfig) -> str:
    if config.pos == "learned" and config.norm == "layernorm" and config.mlp == "gelu" and config.bias:
        return "gpt2"
    if config.pos == "rope" and config.norm == "rmsnorm" and config.mlp == "swiglu" and not config.bias:
        return "qwen2" if config.qkv_bias else "llama"
    raise UserError("this model's config matches no Hugging Face architecture (gpt2 or llama); cannot export")


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    family = hf_family(config)
    if family == "gpt2":
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": config.vocab_size,
                "n_positions": config.seq_len, "n_ctx": config.seq_len, "n_layer": config.n_layer,
                "n_head": config.n_head, "n_embd": config.n_embd, "n_inner": config.intermediate_size,
                "activation_function": "gelu_new", "layer_norm_epsilon": config.norm_eps,
                "tie_word_embeddings": config.tie_embeddings, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
                "attn_pdrop": 0.0}
    hf = {"architectures": ["Qwen2ForCausalLM" if family == "qwen2" else "LlamaForCausalLM"],
          "model_type": family, "vocab_size": config.vocab_size,
          "max_position_embeddings": config.seq_len, "num_hidden_layers": config.n_layer,
          "num_attention_heads": config.n_head, "num_key_value_heads": config.n_kv_head,
          "hidden_size": config.n_embd, "head_dim": config.head_dim,
          "intermediate_size": config.intermediate_size, "hidden_act": "silu", "rms_norm_eps": config.norm_eps,
          "rope_theta": config.rope_theta, "rope_scaling": config.rope_scaling,
          "tie_word_embeddings": config.tie_embeddings, "attention_bias": bool(config.qkv_bias),
          "mlp_bias": False}
    if family == "qwen2":
        hf.pop("attention_bias")
        hf["use_sliding_window"] = False
    return hf


# (HF pattern, llmlab name) per family; {i} is the layer index.
LLAMA_KEYS = [
    ("model.embed_tokens.weight", "tok_emb.weight"),
    ("model.norm.weight", "norm_f.weight"),
    ("lm_head.weight", "lm_head.weight"),
    ("model.layers.{i}.input_layernorm.weight", "blocks.{i}.attn_norm.weight"),
    ("model.layers.{i}.post_attention_layernorm.weight", "blocks.{i}.mlp_norm.weight"),
    *[(f"model.layers.{{i}}.self_attn.{p}.{w}", f"blocks.{{i}}.attn.{p}.{w}")
      for p in ("q_proj", "k_proj", "v_proj", "o_proj") for w in ("weight", "bias")],
    *[(f"model.layers.{{i}}.mlp.{p}.weight", f"blocks.{{i}}.mlp.{p}.weight")
      for p in ("gate_proj", "up_proj", "down_proj")],
]
GPT2_KEYS = [  # Conv1D weights are transposed; c_attn is split separately
    ("transformer.wte.weight", "tok_emb.weight"),
    ("transformer.wpe.weight", "pos_emb.weight"),
    ("transformer.ln_f.weight", "norm_f.weight"),
    ("transformer.ln_f.bias", "norm_f.bias"),
    ("lm_head.weight", "lm_head.weight"),
    *[(f"transformer.h.{{i}}.{hf}.{w}", f"blocks.{{i}}.{ours}.{w}")
      for hf, ours in (("ln_1", "attn_norm"), ("ln_2", "mlp_norm")) for w in ("weight", "bias")],
    *[(f"transformer.h.{{i}}.{hf}.{w}", f"blocks.{{i}}.{ours}.{w}")
      for hf, ours in (("attn.c_proj", "attn.o_proj"), ("mlp.c_fc", "mlp.up_proj"), ("mlp.c_proj", "mlp.down_proj"))
      for w in ("weight", "bias")],
]


def _key_regex(pattern: str) -> re.Pattern:
    return re.compile("^" + re.escape(pattern).replace(r"\{i\}", r"(\d+)") + "$")


def _rename(sd: dict[str, torch.Tensor], pairs: list[tuple[str, str]], source: str) -> dict[str, torch.Tensor]:
    """Rename keys by the (from, to) pattern pairs; unknown keys are an error, never silently dropped."""
    compiled = [(_key_regex(a), b) for a, b in pairs]
    out = {}
    for key, value in sd.items():
        for rx, target in compiled:
            m = rx.match(key)
            if m:
                out[target.replace("{i}", m.group(1)) if m.groups() else target] = value
                break
        else:
            raise UserError(f"{source}: unexpected weight {key!r}; this architecture variant is not supported")
    return out


def state_dict_from_hf(hf_sd: dict[str, torch.Tensor], config: ModelConfig,
                       source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """HF weights -> llmlab weights for `Transformer(config)`."""
    sd = {k: v for k, v in hf_sd.items() if not k.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq"))}
    if hf_family(config) != "gpt2":
        out = _rename(sd, LLAMA_KEYS, source)
    else:
        # some GPT-2 files (the original OpenAI upload) omit the "transformer." prefix
        sd = {k if k.startswith(("transformer.", "lm_head")) else "transformer." + k: v for k, v in sd.items()}
        C = config.n_embd
        out = {}
        for i in range(config.n_layer):
            w = sd.pop(f"transformer.h.{i}.attn.c_attn.weight")  # (C, 3C), Conv1D layout
            b = sd.pop(f"transformer.h.{i}.attn.c_attn.bias")  # (3C,)
            for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
                out[f"blocks.{i}.attn.{name}.weight"] = w[:, j * C:(j + 1) * C].t().contiguous()
                out[f"blocks.{i}.attn.{name}.bias"] = b[j * C:(j + 1) * C]
        for k, v in _rename(sd, GPT2_KEYS, source).items():
            conv1d = k.endswith(("o_proj.weight", "up_proj.weight", "down_proj.weight"))
            out[k] = v.t().contiguous() if conv1d else v
    if config.tie_embeddings:  # one tensor under both names, as in our tied module
        out["lm_head.weight"] = out["tok_emb.weight"]
    return out


GPT2_CONV1D = ("o_proj.weight", "up_proj.weight", "down_proj.weight")  # stored transposed by HF's Conv1D
HF_BUFFERS = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")  # saved by old transformers; recomputed


def tensors_from_hf(key: str, value: torch.Tensor, config: ModelConfig,
                    source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """One HF tensor -> the llmlab tensor(s) it holds, for loading a checkpoint one tensor at a time.

    Same mapping as `state_dict_from_hf`, without needing the other tensors: GPT-2's fused
    transformer.h.0.attn.c_attn.weight (C, 3C) -> blocks.0.attn.{q,k,v}_proj.weight, each (C, C);
    a buffer HF saves -> {}. A tied head is the caller's to tie (it arrives as tok_emb.weight).
    """
    if key.endswith(HF_BUFFERS):
        return {}
    if hf_family(config) != "gpt2":
        return _rename({key: value}, LLAMA_KEYS, source)
    key = key if key.startswith(("transformer.", "lm_head")) else "transformer." + key
    m = re.fullmatch(r"transformer\.h\.(\d+)\.attn\.c_attn\.(weight|bias)", key)
    if m:
        i, kind = m.groups()
        parts = value.split(config.n_embd, dim=-1)  # (C, 3C) Conv1D weight or (3C,) bias -> three
        return {f"blocks.{i}.attn.{name}.{kind}": part.t().contiguous() if kind == "weight" else part.contiguous()
                for name, part in zip(("q_proj", "k_proj", "v_proj"), parts, strict=True)}
    return {k: v.t().contiguous() if k.endswith(GPT2_CONV1D) else v
            for k, v in _rename({key: value}, GPT2_KEYS, source).items()}


def state_dict_to_hf(sd: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """llmlab weights -> HF weights (tied heads are written once, as HF does)."""
    sd = {k: v for k, v in sd.items() if not (config.tie_embeddings and k == "lm_head.weight")}
    if hf_family(config) != "gpt2":
        return _rename(sd, [(b, a) for a, b in LLAMA_KEYS], "model")
    out = {}
    for i in range(config.n_layer):
        qkv = [sd.pop(f"blocks.{i}.attn.{n}.weight") for n in ("q_proj", "k_proj", "v_proj")]
        out[f"transformer.h.{i}.attn.c_attn.weight"] = torch.cat(qkv, dim=0).t().contiguous()
        out[f"transformer.h.{i}.attn.c_attn.bias"] = torch.cat(
            [sd.pop(f"blocks.{i}.attn.{n}.bias") for n in ("q_proj", "k_proj", "v_proj")])
    for k, v in _rename(sd, [(b, a) for a, b in GPT2_KEYS], "model").items():
        conv1d = k.endswith(("attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"))
        out[k] = v.t().contiguous() if conv1d else v
    return out
