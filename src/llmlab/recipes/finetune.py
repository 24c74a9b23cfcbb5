"""`llmlab finetune`, `llmlab finetune classify` and `llmlab merge` (see llmlab.finetune.trainer, .classify).

    llmlab finetune --model smollm2-135m-instruct --data tasks --method lora --max-steps 60 --out runs/lora
    llmlab merge runs/lora --out runs/lora-merged
    llmlab finetune classify --model smollm2-135m-instruct --data tasks --max-steps 30 --out runs/classify
"""

from dataclasses import dataclass, field
from pathlib import Path

from llmlab.common import log
from llmlab.common.errors import UserError
from llmlab.finetune.classify import ClassifyConfig, classify
from llmlab.finetune.trainer import FinetuneConfig, finetune

FinetuneArgs = FinetuneConfig
ClassifyArgs = ClassifyConfig


def run_classify(args: ClassifyArgs) -> dict:
    return classify(args)


def run(args: FinetuneArgs) -> dict:
    summary = finetune(args)
    em = ""
    if summary["exact_match_after"] is not None:
        em = f"; held-out exact match {summary['exact_match_before']:.3f} -> {summary['exact_match_after']:.3f}"
    log.info(f"done: {args.method}, {summary['steps']} steps, {summary['time_per_step_s']:.2f} s/step{em}; "
             f"output in {args.out}")
    return summary


@dataclass
class MergeArgs:
    adapter: str = field(metadata={"help": "folder with adapter_config.json + adapter_model.safetensors",
                                   "positional": True})
    out: str | None = field(default=None, metadata={"help": "where to write the merged checkpoint "
                                                            "(default: <adapter>-merged)"})


def run_merge(args: MergeArgs) -> str:
    """Fold a LoRA adapter into its base and write a full llmlab checkpoint that `llmlab.load` opens."""
    from llmlab.finetune.lora import unwrap_lora
    from llmlab.finetune.peft_format import load_adapter_dir
    from llmlab.train.checkpoint import save_checkpoint

    out = args.out or str(Path(args.adapter.rstrip("/")).with_name(Path(args.adapter.rstrip("/")).name + "-merged"))
    loaded = load_adapter_dir(args.adapter)
    if loaded.tokenizer is None:
        raise UserError(f"{args.adapter}: the base model has no tokenizer; cannot write a full checkpoint")
    unwrap_lora(loaded.model)
    save_checkpoint(out, loaded.model, loaded.tokenizer, {"merged_from": str(args.adapter)})
    log.info(f"merged {args.adapter} into its base: {out}")
    return out
