"""Quantise a whole model in place, describe it in a JSON record, and rebuild it empty for loading.

    record = quantize_model(model, "int4", group_size=128)      # every nn.Linear but lm_head -> Int4Linear
    save_checkpoint(out, model, {"quantization": record}, tokenizer=tok)
    llmlab.load(out)                                            # Transformer(config) -> prepare_quantized
                                                                # -> load_state_dict -> the same logits

Methods (`METHODS`):
    int8   Int8Linear, round to nearest; group_size=None is per channel (the fast kernel), an int group-wise
    int4   Int4Linear, round to nearest, group-wise (128 by default)
    nf4    NF4Linear (QLoRA's format: blocks of 64, double-quantised absmax); group_size/symmetric ignored
    w8a8   W8A8Linear, int8 weights per channel x int8 activations per token; group_size/symmetric ignored;
           with `act_stats` ({layer name: (in,) max |x| per input channel}) SmoothQuant-smoothed first

The record ("quantization" in llmlab.json) names the method, its settings and, per replaced layer,
the class and the shapes that layer's `config()` returns, so `prepare_quantized` can rebuild empty
layers whatever made them (GPTQ and AWQ write the same record through `quantization_record`):

    {"method": "int4", "bits": 4, "group_size": 128, "symmetric": true, "scheme": "group",
     "skip": ["lm_head"], "layers": {"blocks.0.attn.q_proj": {"class": "Int4Linear", "in_features": 576,
     "out_features": 576, "group_size": 128, "symmetric": true, "bias": false, "input_scale": false,
     "perm": false}, ...}}
"""

from collections.abc import Iterable

import torch
import torch.nn as nn
from tqdm import tqdm

from llmlab.common.errors import UserError
from llmlab.models.swap import find_modules, freeze, replace_module
from llmlab.quantize.layers import Int4Linear, Int8Linear, IntLinear
from llmlab.quantize.linear import QuantizedLinear
from llmlab.quantize.nf4 import BLOCK, BLOCK2, NF4Linear
from llmlab.quantize.w8a8 import W8A8Linear

QUANT_LAYERS: dict[str, type[QuantizedLinear]] = {
    "Int8Linear": Int8Linear, "Int4Linear": Int4Linear, "NF4Linear": NF4Linear, "W8A8Linear": W8A8Linear}
METHODS = {"int8": 8, "int4": 4, "nf4": 4, "w8a8": 8}  # method -> weight bits
RECORD_VERSION = 1


def layer_config(layer: QuantizedLinear) -> dict:
    """One layer's entry in the record: its class and what rebuilding it empty needs."""
    if isinstance(layer, IntLinear):
        return layer.config()
    if isinstance(layer, NF4Linear):
        return {"class": "NF4Linear", "in_features": layer.in_features, "out_features": layer.out_features,
                "bias": layer.bias is not None}
    raise UserError(f"{type(layer).__name__}: not a layer quantised checkpoints can hold "
                    f"(known: {', '.join(QUANT_LAYERS)})")


def quantization_record(model: nn.Module, method: str, **settings) -> dict:
    """The JSON record of a quantised model: method, settings, and every QuantizedLinear's `layer_config`."""
    layers = {name: layer_config(m) for name, m in model.named_modules() if isinstance(m, QuantizedLinear)}
    return {"format": RECORD_VERSION, "method": method, **settings, "layers": layers}


DEFAULT_GROUP = {"int8": None, "int4": 128}


def _quantize_layer(linear: nn.Linear, method: str, group_size: int | None, symmetric: bool, per_tensor: bool,
                    act_absmax: torch.Tensor | None, alpha: float) -> QuantizedLinear:
    if method == "int8":
        return Int8Linear.from_linear(linear, group_size, symmetric, per_tensor)
    if method == "int4":
        return Int4Linear.from_linear(linear, group_size, symmetric, per_tensor)
    if method == "nf4":
        return NF4Linear(linear)
    return W8A8Linear.from_linear(linear, act_absmax, alpha)


@torch.no_grad()
def quantize_model(model: nn.Module, method: str = "int8", group_size: int | None | str = "default",
                   symmetric: bool = True, skip: Iterable[str] = ("lm_head",),
                   act_stats: dict[str, torch.Tensor] | None = None, progress: bool = False, per_tensor: bool = False,
                   alpha: float = 0.5) -> dict:
    """Replace every nn.Linear (except names ending in `skip`) by a quantised layer, in place; return the record.

    The model is frozen. `act_stats` (w8a8 only): {layer name: act_absmax (in,)} for SmoothQuant; each
    quantised layer must have one. `per_tensor` (int8/int4): one scale per matrix (group_size is then unused).
    group_size "default": per output channel for int8 (what its fast kernel takes), 128 for int4.
    """
    if method not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)} (got {method!r})")
    if group_size == "default":
        group_size = DEFAULT_GROUP.get(method)
    if act_stats is not None and method != "w8a8":
        raise UserError(f"act_stats: only method w8a8 uses activation statistics (SmoothQuant); got method {method}")
    if per_tensor and method in ("int8", "int4"):
        group_size = None
    skip = tuple(skip)
    freeze(model)
    names = find_modules(model, (nn.Linear,), skip=skip)
    if not names:
        raise UserError("the model has no nn.Linear left to quantise (already quantised, or all skipped)")
    if act_stats is not None:
        missing = [n for n in names if n not in act_stats]
        if missing:
            raise UserError(f"act_stats: no activation maxima for {missing[0]} ({len(missing)} layers missing); "
                            "collect them over the same model with llmlab.quantize.calibration")
    for name in tqdm(names, desc=f"quantising {method}", unit="layer", disable=not progress):
        stats = act_stats[name] if act_stats is not None else None
        replace_module(model, name, _quantize_layer(model.get_submodule(name), method, group_size, symmetric,
                                                    per_tensor, stats, alpha))
    settings: dict = {"bits": METHODS[method], "skip": list(skip)}
    if method in ("int8", "int4"):
        scheme = "tensor" if per_tensor else "channel" if group_size is None else "group"
        settings.update(group_size=group_size, symmetric=symmetric, scheme=scheme)
    elif method == "nf4":
        settings.update(scheme="nf4", block=BLOCK, double_quant_block=BLOCK2)
    else:
        settings.update(scheme="channel", symmetric=True, activations="int8 per token (dynamic)",
                        smoothquant_alpha=alpha if act_stats is not None else None)
    return quantization_record(model, method, **settings)


def _empty_nf4(cfg: dict, dtype: torch.dtype, device: torch.device) -> NF4Linear:
    """An NF4Linear with the buffer shapes of an (out, in) weight and nothing computed (load_state_dict fills it)."""
    layer = NF4Linear.__new__(NF4Linear)
    QuantizedLinear.__init__(layer, nn.Linear(cfg["in_features"], cfg["out_features"], bias=False, device="meta",
                                              dtype=dtype))
    numel = cfg["in_features"] * cfg["out_features"]
    n_blocks = -(-numel // BLOCK)
    layer.register_buffer("packed", torch.empty(numel // 2, dtype=torch.uint8, device=device))
    layer.register_buffer("qabsmax", torch.empty(n_blocks, dtype=torch.uint8, device=device))
    layer.register_buffer("absmax2", torch.empty(-(-n_blocks // BLOCK2), device=device))
    layer.register_buffer("offset", torch.empty((), device=device))
    if cfg.get("bias"):
        layer.bias = nn.Parameter(torch.zeros(cfg["out_features"], dtype=dtype, device=device), requires_grad=False)
    return layer


def prepare_quantized(model: nn.Module, record: dict) -> nn.Module:
    """Turn the float layers a record names into empty quantised layers of the right shapes, in place.

    Used when loading: build the float model from its config, call this, then load_state_dict. Freezes the model.
    """
    layers = record.get("layers") if isinstance(record, dict) else None
    if not isinstance(layers, dict):
        raise UserError("quantization record: no 'layers' table; was it written by quantize_model?")
    freeze(model)
    for name, cfg in layers.items():
        cls = QUANT_LAYERS.get(cfg.get("class"))
        if cls is None:
            raise UserError(f"quantization record: layer {name} has unknown class {cfg.get('class')!r} "
                            f"(known: {', '.join(QUANT_LAYERS)})")
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise UserError(f"quantization record: the model has no layer {name}; is the config the same?") from None
        if not isinstance(old, nn.Linear) or (old.in_features, old.out_features) != (cfg["in_features"],
                                                                                     cfg["out_features"]):
            raise UserError(f"quantization record: {name} is {old} in the model, the record says "
                            f"{cfg['in_features']} -> {cfg['out_features']}")
        dtype, device = old.weight.dtype, old.weight.device
        if cls is NF4Linear:
            new = _empty_nf4(cfg, dtype, device)
        else:
            new = cls(**{k: v for k, v in cfg.items() if k != "class"}, compute_dtype=dtype, device=device)
        replace_module(model, name, new)
    return model


def model_size_bytes(model: nn.Module, kernel_caches: bool = False) -> int:
    """Bytes of every parameter and buffer (a tied tensor once): the model's size in memory and, near enough,
    on disk. `kernel_caches` adds the layouts fast layers built on their first call (an INT4 layer's packed
    copy on the CPU is as big as its codes; INT8 reuses its codes)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    if kernel_caches:
        total += sum(m.cache_bytes() for m in model.modules() if isinstance(m, IntLinear))
    return total
