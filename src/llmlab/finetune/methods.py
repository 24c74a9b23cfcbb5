"""Every fine-tuning method by name: what it does to a model, and what it needs to be rebuilt.

`apply_method(model, spec)` turns a loaded base into the model that trains,
in place where it can. A spec is a small dict, `{"name": "lora", "rank": 8,
"alpha": 16.0, ...}`: the fine-tuning recipe builds it from its arguments,
saves it in the output folder, and `llmlab.load` calls `apply_method` with it
again to rebuild the same model around the saved trainable weights.

    full      nothing frozen: every weight trains
    lora      low-rank updates on the target projections (lora.py)
    qlora     the same on a base stored as NF4 (llmlab.quantize.nf4)
    adapter   bottleneck MLPs after the target projections (adapters.py)
    prompt    trainable virtual tokens ahead of the input (prompt_tuning.py)
    classify  a class head on the last token, plus the last blocks (heads.py)
    reward    a scalar head on the last token over `under` (full, lora or qlora): a reward model (heads.py)
"""

from collections.abc import Callable
from typing import Any

import torch.nn as nn

from llmlab.common.errors import UserError
from llmlab.finetune.adapters import apply_adapters
from llmlab.finetune.heads import add_classification_head, add_score_head
from llmlab.finetune.lora import DEFAULT_TARGETS, apply_lora, apply_qlora
from llmlab.finetune.prompt_tuning import PromptTuned


def _full(model: nn.Module, spec: dict) -> tuple[nn.Module, dict]:
    return model, {}


def _lora(model: nn.Module, spec: dict) -> tuple[nn.Module, dict]:
    apply_lora(model, spec["rank"], spec["alpha"], spec.get("dropout", 0.0), spec.get("targets", DEFAULT_TARGETS))
    return model, {}


def _qlora(model: nn.Module, spec: dict) -> tuple[nn.Module, dict]:
    report = apply_qlora(model, spec["rank"], spec["alpha"], spec.get("dropout", 0.0),
                         spec.get("targets", DEFAULT_TARGETS))
    return model, {"base_weight_bytes": report}


def _adapter(model: nn.Module, spec: dict) -> tuple[nn.Module, dict]:
    return apply_adapters(model, spec["rank"]), {}


def _prompt(model: nn.Module, spec: dict) -> tuple[nn.Module, dict]:
    return PromptTuned(model, spec["rank"], seed=spec.get("seed", 0)), {}


def _classify(model: nn.Module, spec: dict) -> tuple[nn.Module, dict]:
    return add_classification_head(model, len(spec["classes"]), spec.get("train_last_blocks", 1)), {}


def _reward(model: nn.Module, spec: dict) -> tuple[nn.Module, dict]:
    under = spec.get("under", "full")
    if under not in ("full", "lora", "qlora"):
        raise UserError(f"method reward: under={under!r}; a reward model trains with full, lora or qlora")
    model, notes = METHODS[under](model, spec)
    return add_score_head(model), notes


METHODS: dict[str, Callable[[nn.Module, dict], tuple[nn.Module, dict]]] = {
    "full": _full, "lora": _lora, "qlora": _qlora, "adapter": _adapter, "prompt": _prompt, "classify": _classify,
    "reward": _reward,
}
SFT_METHODS = ("full", "lora", "qlora", "adapter", "prompt")  # the ones that keep a language-model head


def apply_method(model: nn.Module, spec: dict[str, Any]) -> tuple[nn.Module, dict]:
    """(the model to train, notes such as NF4 byte counts) for `spec["name"]` applied to `model`."""
    name = spec.get("name")
    if name not in METHODS:
        raise UserError(f"method {name!r}: unknown; choose one of {', '.join(METHODS)}")
    try:
        return METHODS[name](model, spec)
    except KeyError as e:
        raise UserError(f"method {name}: its settings lack {e.args[0]!r}") from None
