"""Hugging Face <-> llmlab: config fields and weight names, both directions.

The only file that knows HF's names. GPT-2 stores its linear layers as Conv1D
(weights transposed, q/k/v fused into one `c_attn`); Bloom fuses q/k/v too, with
rows interleaved per head; Llama, Mistral and Qwen2 use plain Linear layers with
names close to ours (Qwen3 adds q/k norms); the mixtures of experts (Mixtral, Qwen2-MoE, Qwen3-MoE,
OLMoE) add a router and one MLP per expert (`experts.{j}`), as their checkpoints
store them. Which family a config is follows from its shape (`hf_family`), never a
name. Loading directories, shards and hubs is `llmlab.models.pretrained`'s job;
this file maps dicts only.
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


def _llama_like(hf: dict[str, Any], source: str, model_type: str, qkv_bias: bool) -> dict[str, Any]:
    """ModelConfig fields shared by every RoPE/RMSNorm/SwiGLU family (Llama, Mistral, Qwen, the MoEs).

    `attention_bias` (Llama, Qwen3, OLMoE) puts biases on q, k, v and o; Qwen2's are on q, k, v only.
    """
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise UserError(f"{source}: hidden_act={act!r} is not supported (Llama-family models use silu)")
    if hf.get("mlp_bias"):
        raise UserError(f"{source}: mlp_bias=true is not supported")
    seq_len = hf.get("max_position_embeddings", 2048)
    window = hf.get("sliding_window") if hf.get("use_sliding_window", model_type in ("mistral", "mixtral")) else None
    if window and window < seq_len:  # attention past the window would differ: cap the context instead
        seq_len = window
    theta, scaling = _rope_settings(hf)
    return dict(vocab_size=hf["vocab_size"], seq_len=seq_len, n_layer=hf["num_hidden_layers"],
                n_head=hf["num_attention_heads"], n_kv_head=hf.get("num_key_value_heads") or hf["num_attention_heads"],
                n_embd=hf["hidden_size"], head_dim=hf.get("head_dim"), intermediate_size=hf["intermediate_size"],
                pos="rope", rope_theta=theta, rope_scaling=scaling, norm="rmsnorm",
                norm_eps=hf.get("rms_norm_eps", 1e-6), mlp="swiglu", bias=False, qkv_bias=qkv_bias,
                o_bias=bool(hf.get("attention_bias", False)),
                tie_embeddings=hf.get("tie_word_embeddings", False), extra={"model_type": model_type})


def _every_layer_sparse(hf: dict[str, Any], source: str) -> None:
    """Qwen-MoE may keep some layers dense; llmlab's config has one MLP kind for all layers."""
    if hf.get("decoder_sparse_step", 1) != 1 or hf.get("mlp_only_layers"):
        raise UserError(f"{source}: decoder_sparse_step/mlp_only_layers (dense layers among MoE ones) are not "
                        "supported; llmlab puts experts in every layer")


def _gpt2(hf: dict[str, Any], source: str) -> ModelConfig:
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise UserError(f"{source}: activation_function={act!r} is not supported (GPT-2 uses gelu_new)")
    return ModelConfig(vocab_size=hf["vocab_size"], seq_len=hf.get("n_positions", 1024), n_layer=hf["n_layer"],
                       n_head=hf["n_head"], n_embd=hf["n_embd"], intermediate_size=hf.get("n_inner"),
                       pos="learned", norm="layernorm", norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                       mlp="gelu", bias=True, tie_embeddings=hf.get("tie_word_embeddings", True))


def _llama(hf: dict[str, Any], source: str) -> ModelConfig:
    model_type = hf["model_type"]
    qkv_bias = True if model_type == "qwen2" else bool(hf.get("attention_bias", False))
    return ModelConfig(**_llama_like(hf, source, model_type, qkv_bias))


def _qwen3(hf: dict[str, Any], source: str) -> ModelConfig:
    """Qwen3: Llama with an RMSNorm on each head's queries and keys."""
    return ModelConfig(**_llama_like(hf, source, "qwen3", bool(hf.get("attention_bias", False))), qk_norm="head")


def _mixtral(hf: dict[str, Any], source: str) -> ModelConfig:
    """Mixtral: Mistral with every MLP replaced by 8 experts, top-2, softmax over the two best logits."""
    return ModelConfig(**_llama_like(hf, source, "mixtral", False), n_expert=hf["num_local_experts"],
                       expert_top_k=hf["num_experts_per_tok"], router_softmax="after",
                       aux_loss_coef=hf.get("router_aux_loss_coef", 0.001))


def _qwen_moe(hf: dict[str, Any], source: str) -> ModelConfig:
    """Qwen2-MoE (q/k/v biases, a gated shared expert) and Qwen3-MoE (QK-norm per head): softmax before top-k."""
    _every_layer_sparse(hf, source)
    qwen2 = hf["model_type"] == "qwen2_moe"
    fields = _llama_like(hf, source, hf["model_type"], hf.get("qkv_bias", True) if qwen2 else
                         bool(hf.get("attention_bias", False)))
    return ModelConfig(**fields, n_expert=hf.get("num_experts", hf.get("num_local_experts")),
                       expert_top_k=hf["num_experts_per_tok"], expert_size=hf["moe_intermediate_size"],
                       router_softmax="before", norm_topk_prob=hf.get("norm_topk_prob", False),
                       shared_expert_size=hf.get("shared_expert_intermediate_size", 0) if qwen2 else 0,
                       qk_norm="none" if qwen2 else "head", aux_loss_coef=hf.get("router_aux_loss_coef", 0.001))


def _olmoe(hf: dict[str, Any], source: str) -> ModelConfig:
    """OLMoE: 64 small experts, top-8, softmax before top-k, QK-norm over all heads at once."""
    if hf.get("clip_qkv") is not None:
        raise UserError(f"{source}: clip_qkv={hf['clip_qkv']} is not supported (use a checkpoint without it)")
    return ModelConfig(**_llama_like(hf, source, "olmoe", bool(hf.get("attention_bias", False))),
                       n_expert=hf["num_experts"], expert_top_k=hf["num_experts_per_tok"], router_softmax="before",
                       norm_topk_prob=hf.get("norm_topk_prob", False), qk_norm="full",
                       aux_loss_coef=hf.get("router_aux_loss_coef", 0.01))


def _bloom(hf: dict[str, Any], source: str) -> ModelConfig:
    """Bloom: GPT-2's block with ALiBi instead of a position table and a LayerNorm on the embeddings."""
    if hf.get("apply_residual_connection_post_layernorm"):
        raise UserError(f"{source}: apply_residual_connection_post_layernorm=true is not supported")
    C = hf.get("hidden_size", hf.get("n_embed"))
    return ModelConfig(vocab_size=hf["vocab_size"], seq_len=hf.get("seq_length", 2048),  # ALiBi has no limit
                       n_layer=hf.get("n_layer", hf.get("num_hidden_layers")),
                       n_head=hf.get("n_head", hf.get("num_attention_heads")), n_embd=C, intermediate_size=4 * C,
                       pos="alibi", norm="layernorm", norm_eps=hf.get("layer_norm_epsilon", 1e-5), emb_norm=True,
                       mlp="gelu", bias=True, tie_embeddings=hf.get("tie_word_embeddings", True),
                       extra={"model_type": "bloom"})


CONFIG_READERS = {"gpt2": _gpt2, **{t: _llama for t in LLAMA_LIKE}, "qwen3": _qwen3, "mixtral": _mixtral,
                  "qwen2_moe": _qwen_moe,
                  "qwen3_moe": _qwen_moe, "olmoe": _olmoe, "bloom": _bloom}


def config_from_hf(hf: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """Map a HF `config.json` dict to a ModelConfig; unsupported options name the field."""
    model_type = hf.get("model_type")
    if model_type not in CONFIG_READERS:
        raise UserError(f"{source}: model_type={model_type!r} is not supported; llmlab loads "
                        f"{', '.join(CONFIG_READERS)}")
    return CONFIG_READERS[model_type](hf, source)


def hf_family(config: ModelConfig) -> str:
    """Which HF architecture a config is, by its shape (never its name); UserError when none fits."""
    c = config
    moe, rope_shape = c.n_expert > 0, c.pos == "rope" and c.norm == "rmsnorm" and c.mlp == "swiglu" and not c.bias
    plain = c.norm_placement == "pre" and not c.emb_norm and c.qk_norm == "none"
    if plain and not moe and c.pos == "learned" and c.norm == "layernorm" and c.mlp == "gelu" and c.bias:
        return "gpt2"
    if plain and not moe and rope_shape and c.qkv_bias >= c.o_bias:
        return "qwen2" if c.qkv_bias and not c.o_bias else "llama"
    if c.norm_placement == "pre" and not c.emb_norm and not moe and rope_shape and c.qk_norm == "head" \
            and c.qkv_bias == c.o_bias:
        return "qwen3"
    if c.norm_placement == "pre" and c.emb_norm and not moe and c.qk_norm == "none" and c.pos == "alibi" \
            and c.norm == "layernorm" and c.mlp == "gelu" and c.bias:
        return "bloom"
    if moe and rope_shape and c.norm_placement == "pre" and not c.emb_norm:
        softmax_after = c.router_softmax == "after" or c.norm_topk_prob  # the same weights either way
        llama_bias = c.qkv_bias == c.o_bias  # attention_bias: on all four projections or none
        if c.shared_expert_size and c.qkv_bias and not c.o_bias and c.qk_norm == "none" \
                and c.router_softmax == "before":
            return "qwen2_moe"
        if not c.shared_expert_size and llama_bias and c.qk_norm == "head" and c.router_softmax == "before":
            return "qwen3_moe"
        if not c.shared_expert_size and llama_bias and c.qk_norm == "full" and c.router_softmax == "before":
            return "olmoe"
        if not c.shared_expert_size and c.qk_norm == "none" and not c.qkv_bias and not c.o_bias and softmax_after:
            return "mixtral"
    raise UserError("this model's config matches no Hugging Face architecture (gpt2, llama, qwen2, qwen3, bloom, "
                    "mixtral, qwen2_moe, qwen3_moe, olmoe); cannot export")


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    family = hf_family(config)
    c = config
    if family == "gpt2":
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": config.vocab_size,
                "n_positions": config.seq_len, "n_ctx": config.seq_len, "n_layer": config.n_layer,
                "n_head": config.n_head, "n_embd": config.n_embd, "n_inner": config.intermediate_size,
                "activation_function": "gelu_new", "layer_norm_epsilon": config.norm_eps,
                "tie_word_embeddings": config.tie_embeddings, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
                "attn_pdrop": 0.0}
    if family == "bloom":
        if c.intermediate_size != 4 * c.n_embd or c.head_dim * c.n_head != c.n_embd:
            raise UserError("Bloom export needs intermediate_size == 4 * n_embd and n_head * head_dim == n_embd")
        return {"architectures": ["BloomForCausalLM"], "model_type": "bloom", "vocab_size": c.vocab_size,
                "hidden_size": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head, "layer_norm_epsilon": c.norm_eps,
                "tie_word_embeddings": c.tie_embeddings, "seq_length": c.seq_len, "hidden_dropout": 0.0,
                "attention_dropout": 0.0, "apply_residual_connection_post_layernorm": False}
    hf = {"architectures": [HF_CLASSES[family]], "model_type": family, "vocab_size": config.vocab_size,
          "max_position_embeddings": config.seq_len, "num_hidden_layers": config.n_layer,
          "num_attention_heads": config.n_head, "num_key_value_heads": config.n_kv_head,
          "hidden_size": config.n_embd, "head_dim": config.head_dim,
          "intermediate_size": config.intermediate_size, "hidden_act": "silu", "rms_norm_eps": config.norm_eps,
          "rope_theta": config.rope_theta, "rope_scaling": config.rope_scaling,
          "tie_word_embeddings": config.tie_embeddings, "attention_bias": bool(config.qkv_bias),
          "mlp_bias": False}
    if family in ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe"):
        hf["use_sliding_window"] = False
    if family in ("qwen2", "qwen2_moe"):
        hf.pop("attention_bias")
    if family == "mixtral":
        hf.update(num_local_experts=c.n_expert, num_experts_per_tok=c.expert_top_k,
                  intermediate_size=c.expert_size or c.intermediate_size)
    elif family in ("qwen2_moe", "qwen3_moe", "olmoe"):
        hf.update(num_experts=c.n_expert, num_experts_per_tok=c.expert_top_k, norm_topk_prob=c.norm_topk_prob)
        if family == "olmoe":
            hf["intermediate_size"] = c.expert_size or c.intermediate_size
        else:
            hf.update(moe_intermediate_size=c.expert_size or c.intermediate_size, decoder_sparse_step=1,
                      mlp_only_layers=[])
        if family == "qwen2_moe":
            hf.update(qkv_bias=bool(c.qkv_bias), shared_expert_intermediate_size=c.shared_expert_size)
    return hf


HF_CLASSES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
              "mixtral": "MixtralForCausalLM",
              "qwen2_moe": "Qwen2MoeForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM", "olmoe": "OlmoeForCausalLM"}


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


QK_NORM_KEYS = [(f"model.layers.{{i}}.self_attn.{n}.weight", f"blocks.{{i}}.attn.{n}.weight")
                for n in ("q_norm", "k_norm")]
MIXTRAL_MOE_KEYS = [  # w1 is the gate, w3 the up projection, w2 the down projection
    ("model.layers.{i}.block_sparse_moe.gate.weight", "blocks.{i}.mlp.router.weight"),
    ("model.layers.{i}.mlp.gate.weight", "blocks.{i}.mlp.router.weight"),  # transformers 5 in memory
    *[(f"model.layers.{{i}}.block_sparse_moe.experts.{{j}}.{w}.weight", f"blocks.{{i}}.mlp.experts.{{j}}.{p}.weight")
      for w, p in (("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj"))],
]
QWEN_MOE_KEYS = [
    ("model.layers.{i}.mlp.gate.weight", "blocks.{i}.mlp.router.weight"),
    ("model.layers.{i}.mlp.shared_expert_gate.weight", "blocks.{i}.mlp.shared_gate.weight"),
    *[(f"model.layers.{{i}}.mlp.{e}.{p}.weight", f"blocks.{{i}}.mlp.{e}.{p}.weight")
      for e in ("experts.{j}", "shared_expert") for p in ("gate_proj", "up_proj", "down_proj")],
]
BLOOM_KEYS = [  # query_key_value is split separately (its rows interleave q, k, v per head)
    ("transformer.word_embeddings.weight", "tok_emb.weight"),
    ("lm_head.weight", "lm_head.weight"),
    *[(f"transformer.{hf}.{w}", f"{ours}.{w}") for hf, ours in (("word_embeddings_layernorm", "emb_norm"),
                                                                 ("ln_f", "norm_f")) for w in ("weight", "bias")],
    *[(f"transformer.h.{{i}}.{hf}.{w}", f"blocks.{{i}}.{ours}.{w}")
      for hf, ours in (("input_layernorm", "attn_norm"), ("post_attention_layernorm", "mlp_norm"),
                       ("self_attention.dense", "attn.o_proj"), ("mlp.dense_h_to_4h", "mlp.up_proj"),
                       ("mlp.dense_4h_to_h", "mlp.down_proj")) for w in ("weight", "bias")],
]
KEYS = {"gpt2": GPT2_KEYS, "llama": LLAMA_KEYS, "qwen2": LLAMA_KEYS, "qwen3": LLAMA_KEYS + QK_NORM_KEYS,
        "bloom": BLOOM_KEYS,
        "mixtral": LLAMA_KEYS + MIXTRAL_MOE_KEYS, "qwen2_moe": LLAMA_KEYS + QWEN_MOE_KEYS,
        "qwen3_moe": LLAMA_KEYS + QWEN_MOE_KEYS + QK_NORM_KEYS, "olmoe": LLAMA_KEYS + QWEN_MOE_KEYS + QK_NORM_KEYS}


def _key_regex(pattern: str) -> re.Pattern:
    """"model.layers.{i}.mlp.experts.{j}.up_proj.weight" -> a regex capturing the layer i and expert j."""
    return re.compile("^" + re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{j\}", r"(?P<j>\d+)") + "$")


def _rename(sd: dict[str, torch.Tensor], pairs: list[tuple[str, str]], source: str) -> dict[str, torch.Tensor]:
    """Rename keys by the (from, to) pattern pairs; unknown keys are an error, never silently dropped."""
    compiled = [(_key_regex(a), b) for a, b in pairs]
    out = {}
    for key, value in sd.items():
        for rx, target in compiled:
            m = rx.match(key)
            if m:
                for name, number in m.groupdict().items():
                    target = target.replace("{" + name + "}", number)
                out[target] = value
                break
        else:
            raise UserError(f"{source}: unexpected weight {key!r}; this architecture variant is not supported")
    return out


def state_dict_from_hf(hf_sd: dict[str, torch.Tensor], config: ModelConfig,
                       source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """HF weights -> llmlab weights for `Transformer(config)`."""
    out = {}
    for key, value in hf_sd.items():
        out.update(tensors_from_hf(key, value, config, source))
    if config.tie_embeddings:  # one tensor under both names, as in our tied module
        out["lm_head.weight"] = out["tok_emb.weight"]
    return out


GPT2_CONV1D = ("o_proj.weight", "up_proj.weight", "down_proj.weight")  # stored transposed by HF's Conv1D
HF_BUFFERS = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")  # saved by old transformers; recomputed
QKV = ("q_proj", "k_proj", "v_proj")


def tensors_from_hf(key: str, value: torch.Tensor, config: ModelConfig,
                    source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """One HF tensor -> the llmlab tensor(s) it holds, for loading a checkpoint one tensor at a time.

    GPT-2's fused transformer.h.0.attn.c_attn.weight (C, 3C) -> blocks.0.attn.{q,k,v}_proj.weight, each (C, C);
    Bloom's transformer.h.0.self_attention.query_key_value.weight (H*3*D, C), rows ordered (head, q|k|v, D)
    -> the same three; a buffer HF saves -> {}. A tied head is the caller's to tie (it arrives as tok_emb.weight).
    """
    if key.endswith(HF_BUFFERS):
        return {}
    family = hf_family(config)
    m = re.fullmatch(r"model\.layers\.(\d+)\.(?:mlp|block_sparse_moe)\.experts\.(gate_up_proj|down_proj)", key)
    if m and config.n_expert:  # transformers 5 keeps all experts in one tensor: (E, 2H, C) or (E, C, H)
        i, kind = m.groups()
        out = {}
        for j, w in enumerate(value):
            names = ("gate_proj", "up_proj") if kind == "gate_up_proj" else ("down_proj",)
            for name, part in zip(names, w.chunk(len(names), dim=0), strict=True):
                out[f"blocks.{i}.mlp.experts.{j}.{name}.weight"] = part.contiguous()
        return out
    if family not in ("gpt2", "bloom"):
        return _rename({key: value}, KEYS[family], source)
    # some GPT-2 and Bloom files (the original uploads) omit the "transformer." prefix
    key = key if key.startswith(("transformer.", "lm_head")) else "transformer." + key
    if family == "bloom":
        m = re.fullmatch(r"transformer\.h\.(\d+)\.self_attention\.query_key_value\.(weight|bias)", key)
        if m:
            i, kind = m.groups()
            H, D = config.n_head, config.head_dim
            parts = value.view(H, 3, D, *value.shape[1:])  # (H, 3, D[, C])
            return {f"blocks.{i}.attn.{name}.{kind}": parts[:, j].reshape(H * D, *value.shape[1:]).contiguous()
                    for j, name in enumerate(QKV)}
        return _rename({key: value}, BLOOM_KEYS, source)
    m = re.fullmatch(r"transformer\.h\.(\d+)\.attn\.c_attn\.(weight|bias)", key)
    if m:
        i, kind = m.groups()
        parts = value.split(config.n_embd, dim=-1)  # (C, 3C) Conv1D weight or (3C,) bias -> three
        return {f"blocks.{i}.attn.{name}.{kind}": part.t().contiguous() if kind == "weight" else part.contiguous()
                for name, part in zip(QKV, parts, strict=True)}
    return {k: v.t().contiguous() if k.endswith(GPT2_CONV1D) else v
            for k, v in _rename({key: value}, GPT2_KEYS, source).items()}


def state_dict_to_hf(sd: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """llmlab weights -> HF weights (tied heads are written once, as HF does)."""
    sd = {k: v for k, v in sd.items() if not (config.tie_embeddings and k == "lm_head.weight")}
    family = hf_family(config)
    if family not in ("gpt2", "bloom"):
        return _rename(sd, [(b, a) for a, b in KEYS[family]], "model")
    out = {}
    for i in range(config.n_layer):
        for kind in ("weight", "bias"):
            q, k, v = (sd.pop(f"blocks.{i}.attn.{n}.{kind}") for n in QKV)
            if family == "gpt2":  # Conv1D: (C, 3C)
                fused = torch.cat([q, k, v], dim=0)
                out[f"transformer.h.{i}.attn.c_attn.{kind}"] = fused.t().contiguous() if kind == "weight" else fused
            else:  # rows (head, q|k|v, D)
                H, D = config.n_head, config.head_dim
                fused = torch.stack([t.reshape(H, D, *t.shape[1:]) for t in (q, k, v)], dim=1)  # (H, 3, D[, C])
                out[f"transformer.h.{i}.self_attention.query_key_value.{kind}"] = fused.reshape(3 * H * D,
                                                                                                *q.shape[1:])
    for k, v in _rename(sd, [(b, a) for a, b in KEYS[family]], "model").items():
        conv1d = family == "gpt2" and k.endswith(("attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"))
        out[k] = v.t().contiguous() if conv1d else v
    return out
