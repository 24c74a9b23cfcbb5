"""LoRA adapters in PEFT's folder layout, so `peft` and llmlab read each other's adapters.

A PEFT LoRA folder holds two files:

    adapter_config.json         {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": [...],
                                 "base_model_name_or_path": "...", ...}
    adapter_model.safetensors   base_model.model.<HF module name>.lora_A.weight  (r, in)
                                base_model.model.<HF module name>.lora_B.weight  (out, r)

Module names go through `llmlab.models.hf`'s key maps, the only place HF names
live. GPT-2 fuses q, k and v into one `c_attn`: PEFT's single LoRA on it
becomes three of ours sharing A (exact), and our three become one of rank 3r
with A stacked and B block-diagonal (exact, via PEFT's `rank_pattern`).
`llmlab.load` opens such a folder as a whole model: the base named in
`base_model_name_or_path` (a path or an alias it knows) plus the adapter.
"""

import json
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from llmlab.common.errors import UserError
from llmlab.common.io import atomic_write, write_json_atomic
from llmlab.finetune.lora import LoRALinear, apply_lora, lora_modules, set_lora_weights
from llmlab.models.config import ModelConfig
from llmlab.models.hf import KEYS, hf_family

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."
QKV = ("q_proj", "k_proj", "v_proj")


def _module_pairs(config: ModelConfig) -> list[tuple[re.Pattern, str, re.Pattern, str]]:
    """(HF regex, HF pattern, llmlab regex, llmlab pattern) for every linear layer's module name."""
    family = hf_family(config)
    if family == "bloom":  # q, k and v live in one fused HF matrix, which PEFT adapts as one module
        raise UserError("PEFT's adapter layout for Bloom (fused query_key_value) is not supported; "
                        "fine-tune with --method full, or keep llmlab's own checkpoint/")
    keys = KEYS[family]
    out = []
    for hf, ours in keys:
        # per-layer modules (LoRA never targets the embeddings); MoE experts ({j}) have no PEFT mapping here
        if hf.endswith(".weight") and "{i}" in hf and "{j}" not in hf:
            hf_mod, our_mod = hf.removesuffix(".weight"), ours.removesuffix(".weight")
            out.append((_rx(hf_mod), hf_mod, _rx(our_mod), our_mod))
    return out


def _rx(pattern: str) -> re.Pattern:
    return re.compile("^" + re.escape(pattern).replace(r"\{i\}", r"(\d+)") + "$")


def _translate(name: str, pairs, forward: bool) -> str | None:
    for hf_rx, hf_pat, our_rx, our_pat in pairs:
        m = (our_rx if forward else hf_rx).match(name)
        if m:
            return (hf_pat if forward else our_pat).replace("{i}", m.group(1))
    return None


def to_peft_state_dict(model: nn.Module, config: ModelConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Our LoRA layers -> PEFT's tensors and the per-module (rank, alpha) for the config."""
    pairs, mods = _module_pairs(config), lora_modules(model)
    sd: dict[str, torch.Tensor] = {}
    ranks: dict[str, tuple[int, float]] = {}
    fused: dict[str, dict[str, LoRALinear]] = {}
    for name, m in mods.items():
        layer, _, leaf = name.rpartition(".")
        if hf_family(config) == "gpt2" and leaf in QKV:
            fused.setdefault(layer, {})[leaf] = m
            continue
        hf = _translate(name, pairs, forward=True)
        if hf is None:
            raise UserError(f"LoRA on {name}: no Hugging Face name for this module; PEFT export needs attention "
                            "or MLP projections")
        sd[f"{PREFIX}{hf}.lora_A.weight"], sd[f"{PREFIX}{hf}.lora_B.weight"] = m.lora_A, m.lora_B
        ranks[hf] = (m.rank, m.alpha)
    for layer, group in fused.items():  # blocks.{i}.attn -> transformer.h.{i}.attn.c_attn
        if set(group) != set(QKV) or len({(m.rank, m.alpha) for m in group.values()}) != 1:
            raise UserError(f"GPT-2 fuses q, k and v into c_attn: LoRA on {layer} must target all three "
                            "with one rank and alpha to export to PEFT")
        q = group["q_proj"]
        hf = "transformer.h." + layer.split(".")[1] + ".attn.c_attn"
        sd[f"{PREFIX}{hf}.lora_A.weight"] = torch.cat([group[n].lora_A for n in QKV])  # (3r, C)
        sd[f"{PREFIX}{hf}.lora_B.weight"] = torch.block_diag(*[group[n].lora_B for n in QKV])  # (3C, 3r)
        ranks[hf] = (3 * q.rank, 3 * q.alpha)  # same alpha / r as each of the three
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}, ranks


def save_peft_adapter(model: nn.Module, out_dir: str | Path, base_model_name_or_path: str) -> None:
    """Write `adapter_config.json` + `adapter_model.safetensors` that `peft.PeftModel.from_pretrained` loads."""
    mods = lora_modules(model)
    if not mods:
        raise UserError(f"{out_dir}: the model has no LoRA layers to export")
    sd, ranks = to_peft_state_dict(model, model.config)
    r, alpha = max(set(ranks.values()), key=list(ranks.values()).count)  # the common setting; others by pattern
    dropout = next(iter(mods.values())).dropout
    cfg = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model_name_or_path,
        "r": r, "lora_alpha": alpha, "lora_dropout": dropout.p if isinstance(dropout, nn.Dropout) else 0.0,
        "target_modules": sorted({_suffix(hf) for hf in ranks}), "bias": "none",
        "fan_in_fan_out": hf_family(model.config) == "gpt2", "inference_mode": True, "init_lora_weights": True,
        "use_rslora": False, "use_dora": False, "modules_to_save": None, "layers_to_transform": None,
        "rank_pattern": {hf: rk for hf, (rk, _) in ranks.items() if rk != r},
        "alpha_pattern": {hf: a for hf, (_, a) in ranks.items() if a != alpha},
    }
    out_dir = Path(out_dir)
    atomic_write(out_dir / WEIGHTS_NAME, lambda tmp: save_file(sd, tmp, metadata={"format": "pt"}))
    write_json_atomic(out_dir / CONFIG_NAME, cfg)


def _suffix(hf_module: str) -> str:
    """model.layers.3.self_attn.q_proj -> self_attn.q_proj (what PEFT's target_modules matches)."""
    return re.sub(r"^.*?\.\d+\.", "", hf_module)


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    path = Path(adapter_dir) / CONFIG_NAME
    if not path.is_file():
        raise UserError(f"{adapter_dir}: no {CONFIG_NAME}; not a PEFT adapter folder")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if cfg.get("peft_type") != "LORA":
        raise UserError(f"{path}: peft_type={cfg.get('peft_type')!r}; llmlab reads LORA adapters only")
    for key in ("use_dora", "use_rslora"):
        if cfg.get(key):
            raise UserError(f"{path}: {key}=true is not supported by llmlab")
    if cfg.get("modules_to_save") or cfg.get("bias", "none") != "none":
        raise UserError(f"{path}: modules_to_save and trained biases are not supported; only LoRA weights")
    return cfg


def _pattern_value(hf: str, patterns: dict[str, Any], default: Any) -> Any:
    for key, value in patterns.items():  # PEFT matches a pattern against the end of the module name
        if re.fullmatch(rf"(.*\.)?{key}", hf):
            return value
    return default


def load_peft_adapter(model: nn.Module, adapter_dir: str | Path) -> nn.Module:
    """Apply the LoRA adapter in a PEFT folder to our model (in place) and return it."""
    cfg = read_adapter_config(adapter_dir)
    path = Path(adapter_dir) / WEIGHTS_NAME
    if not path.is_file():
        raise UserError(f"{adapter_dir}: no {WEIGHTS_NAME}")
    pairs, config = _module_pairs(model.config), model.config
    ours: dict[str, torch.Tensor] = {}
    settings: dict[str, tuple[int, float]] = {}
    for key, value in load_file(str(path)).items():
        m = re.fullmatch(r"base_model\.model\.(.+)\.(lora_[AB])(?:\.default)?\.weight", key)
        if m is None:
            raise UserError(f"{path}: unexpected tensor {key!r}; expected ...lora_A.weight / ...lora_B.weight")
        hf, which = m.groups()
        fused = re.fullmatch(r"transformer\.h\.(\d+)\.attn\.c_attn", hf)
        names = [f"blocks.{fused.group(1)}.attn.{n}" for n in QKV] if fused else [_translate(hf, pairs, False)]
        if names[0] is None:
            raise UserError(f"{path}: module {hf!r} has no llmlab counterpart for a {hf_family(config)} model")
        if which == "lora_B" and fused:
            parts = value.chunk(3, dim=0)  # (3C, r) -> three (C, r): q, k and v share A
        else:
            parts = [value] * len(names)
        for name, part in zip(names, parts, strict=True):
            ours[f"{name}.{which}"] = part
            if which == "lora_A":
                rank = _pattern_value(hf, cfg.get("rank_pattern") or {}, cfg["r"])
                alpha = _pattern_value(hf, cfg.get("alpha_pattern") or {}, cfg["lora_alpha"])
                settings[name] = (value.shape[0], alpha * value.shape[0] / rank)
    existing = lora_modules(model)
    for name, (rank, alpha) in settings.items():
        if name not in existing:
            apply_lora(model, rank, alpha, cfg.get("lora_dropout", 0.0), targets=[re.escape(name)])
    set_lora_weights(model, ours, source=str(path))
    return model
