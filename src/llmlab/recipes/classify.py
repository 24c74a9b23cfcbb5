"""`llmlab finetune classify`: texts with labels in; a classifier, its accuracy and a confusion matrix out.

    llmlab finetune classify --model smollm2-135m-instruct --data tasks --max-steps 30 --out runs/classify

Data: a .jsonl file of {"text": "...", "label": "spam"} rows, or `tasks` (the built-in questions labelled
by family). The model gets a class head on its last real token; the head, the final norm and the last
`--train-last-blocks` blocks train (`llmlab.finetune.heads`). Accuracy and the confusion matrix are
measured on a held-out split before and after (`llmlab.eval.classification`). Writes <out>/summary.json
and <out>/checkpoint/ (trainable weights naming the base); `llmlab.load(out).classify(texts)` uses it.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlab.common import checkpoint, log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device, seed_everything
from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic
from llmlab.data.labeled import labeled_batches, load_labeled
from llmlab.data.loader import EpochBatches
from llmlab.data.sft import split_validation
from llmlab.eval.classification import evaluate_classifier
from llmlab.finetune.methods import apply_method
from llmlab.loading import load
from llmlab.models.gpt import count_parameters
from llmlab.train.loop import LoopSettings, TrainState, train_loop
from llmlab.train.objectives import classification_loss
from llmlab.train.optim import make_adamw


@dataclass
class ClassifyArgs:
    model: str = arg("smollm2-135m-instruct", "base model: alias, GGUF file, HF folder or llmlab checkpoint")
    data: str = arg("tasks", "'tasks' (built-in: task family from the question) or a .jsonl of text/label rows")
    out: str = arg("runs/classify", "output folder: summary.json, checkpoint/")
    train_last_blocks: int = arg(1, "how many of the last blocks train along with the head")
    lr: float = arg(5e-5, "peak learning rate")
    warmup_steps: int = arg(5, "linear warmup steps")
    batch_size: int = arg(8, "texts per step")
    seq_len: int = arg(128, "texts are cut to this many tokens")
    max_steps: int = arg(50, "optimizer steps")
    val_fraction: float = arg(0.2, "share held out for accuracy and the confusion matrix")
    n_train: int = arg(600, "built-in tasks: number of texts (train + held out)")
    skip_bad_rows: bool = arg(False, "skip malformed rows (counted) instead of stopping")
    device: str = arg("auto", "cpu, cuda, cuda:N or auto")
    seed: int = arg(0, "seed for the head, data order and split")
    progress: bool = arg(True, "show a progress bar")


def run(args: ClassifyArgs) -> dict[str, Any]:
    """Train a classifier per `args`; returns the summary written to <out>/summary.json, plus the model."""
    seed_everything(args.seed)
    device, out = resolve_device(args.device), Path(args.out)
    rows, skipped = load_labeled(args.data, args.n_train, args.seed, args.skip_bad_rows)
    classes = sorted({label for _, label in rows})
    if len(classes) < 2:
        raise UserError(f"--data {args.data}: found {len(classes)} label(s); classification needs at least 2")
    train, held_out = split_validation(rows, args.val_fraction, args.seed)
    loaded = load(args.model)
    if loaded.tokenizer is None:
        raise UserError(f"--model {args.model}: has no tokenizer")
    tok = loaded.tokenizer
    spec = {"name": "classify", "classes": classes, "train_last_blocks": args.train_last_blocks}
    model, _ = apply_method(loaded.model, spec)
    model.to(device)
    val_batches = labeled_batches(tok, held_out, classes, args.batch_size, args.seq_len)
    before, _ = evaluate_classifier(model, val_batches, len(classes))
    log.info(f"classify: {len(classes)} classes, {len(train)} train / {len(held_out)} held-out texts; "
             f"accuracy before {before:.3f}")
    optimizer = make_adamw(model, args.lr, 0.0, device_type=device.type)
    batches = EpochBatches(lambda epoch: labeled_batches(tok, train, classes, args.batch_size, args.seq_len,
                                                         seed=args.seed + epoch))

    def next_batch():
        idx, labels, mask = batches()
        return idx.to(device), labels.to(device), {"attn_mask": mask.to(device)}

    def save(st: TrainState) -> None:
        meta = {"run": dataclasses.asdict(args), "state": st.to_dict(), "base": checkpoint.base_reference(args.model),
                "method": spec}
        checkpoint.save_checkpoint(out / "checkpoint", model, meta, optimizer=optimizer, trainable_only=True)

    settings = LoopSettings(max_steps=args.max_steps, lr=args.lr, warmup_steps=args.warmup_steps,
                            progress=args.progress)
    state = train_loop(model, optimizer, next_batch, settings, TrainState(), save=save, loss_fn=classification_loss)
    after, cm = evaluate_classifier(model, val_batches, len(classes))
    summary = {"classes": classes, "accuracy_before": before, "accuracy_after": after,
               "confusion_matrix": cm.tolist(), "train": len(train), "held_out": len(held_out),
               "skipped_rows": skipped, "trainable_params": count_parameters(model, trainable_only=True),
               "steps": state.step, "time_per_step_s": state.elapsed_s / max(state.step, 1)}
    write_json_atomic(out / "summary.json", summary)
    log.info(f"classify: accuracy {before:.3f} -> {after:.3f}; confusion matrix (rows: true {classes}):\n"
             + "\n".join("  " + " ".join(f"{v:5d}" for v in row) for row in cm.tolist()))
    return {**summary, "model": model, "tokenizer": tok}
