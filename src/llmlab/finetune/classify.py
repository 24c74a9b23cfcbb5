"""Classification fine-tuning end to end: texts with labels in; accuracy and a confusion matrix out.

Data: a .jsonl file of {"text": "...", "label": "spam"} rows (labels are any strings or ints), or
`tasks`: the built-in task questions labelled by family (arithmetic / conversion / string), generated
offline. The model gets a new head on its last real token (`heads.py`); the head, the final norm and
the last `train_last_blocks` blocks train. Accuracy and the confusion matrix are measured on a held-out
split before and after; everything goes to <out>/summary.json, the trained part to <out>/checkpoint/.
"""

import dataclasses
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from llmlab.common import log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device, seed_everything
from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic
from llmlab.data.sft import split_validation
from llmlab.data.tasks import make_tasks
from llmlab.finetune.checkpoint import save_trainable_checkpoint
from llmlab.finetune.heads import accuracy, add_classification_head, confusion_matrix, last_token_logits
from llmlab.models.gpt import count_parameters
from llmlab.train.loop import LoopSettings, TrainState, train_loop
from llmlab.train.optim import make_adamw


@dataclass
class ClassifyConfig:
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


def read_classification_jsonl(path: str | Path, skip_bad_rows: bool = False) -> tuple[list[tuple[str, str]], int]:
    """(text, label) pairs from {"text", "label"} rows; a bad row names file and line, or is skipped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; give a .jsonl of {{\"text\", \"label\"}} rows or --data tasks")
    rows, skipped = [], 0
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "text" not in row or "label" not in row:
                raise ValueError("missing field: rows need 'text' and 'label'")
            if not isinstance(row["text"], str) or not row["text"].strip():
                raise ValueError("empty text")
            rows.append((row["text"], str(row["label"])))
        except (json.JSONDecodeError, ValueError) as e:
            what = f"bad JSON ({e.msg})" if isinstance(e, json.JSONDecodeError) else str(e)
            if not skip_bad_rows:
                raise UserError(f"{path}:{lineno}: {what}; fix the row or pass --skip-bad-rows") from None
            skipped += 1
    return rows, skipped


def _batches(tokenizer, rows: list[tuple[str, str]], classes: list[str], batch_size: int, seq_len: int,
             seed: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(idx (B, T), labels (B,), attn_mask (B, T)) batches, right-padded; shuffled when seed is given."""
    order = list(range(len(rows)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    out = []
    for i in range(0, len(order), batch_size):
        chunk = [rows[j] for j in order[i:i + batch_size]]
        ids = [tokenizer.encode(text)[:seq_len] or [tokenizer.pad_id] for text, _ in chunk]
        idx, mask = tokenizer.pad(ids, side="right")
        out.append((idx, torch.tensor([classes.index(label) for _, label in chunk]), mask))
    return out


@torch.no_grad()
def evaluate(model, batches, n_classes: int, device: torch.device) -> tuple[float, torch.Tensor]:
    model.eval()
    preds, labels = [], []
    for idx, y, mask in batches:
        logits = model(idx.to(device), attn_mask=mask.to(device))
        preds.append(last_token_logits(logits, mask.to(device)).argmax(-1).cpu())
        labels.append(y)
    preds, labels = torch.cat(preds), torch.cat(labels)
    return accuracy(preds, labels), confusion_matrix(preds, labels, n_classes)


def classify(cfg: ClassifyConfig) -> dict[str, Any]:
    """Train a classifier per `cfg`; returns the summary written to <out>/summary.json."""
    from llmlab.models.pretrained import load

    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    if cfg.data == "tasks":
        rows, skipped = [(t["messages"][1]["content"], t["family"]) for t in make_tasks(cfg.n_train, cfg.seed)], 0
    else:
        rows, skipped = read_classification_jsonl(cfg.data, cfg.skip_bad_rows)
    classes = sorted({label for _, label in rows})
    if len(classes) < 2:
        raise UserError(f"--data {cfg.data}: found {len(classes)} label(s); classification needs at least 2")
    train, held_out = split_validation(rows, cfg.val_fraction, cfg.seed)
    loaded = load(cfg.model)
    if loaded.tokenizer is None:
        raise UserError(f"--model {cfg.model}: has no tokenizer")
    tok = loaded.tokenizer
    model = add_classification_head(loaded.model, len(classes), cfg.train_last_blocks).to(device)
    val_batches = _batches(tok, held_out, classes, cfg.batch_size, cfg.seq_len)
    before, _ = evaluate(model, val_batches, len(classes), device)
    log.info(f"classify: {len(classes)} classes, {len(train)} train / {len(held_out)} held-out texts; "
             f"accuracy before {before:.3f}")
    optimizer = make_adamw(model, cfg.lr, 0.0, device_type=device.type)
    epoch_batches: dict[int, list] = {}
    position = {"i": 0}

    def next_batch():
        n = max(1, -(-len(train) // cfg.batch_size))
        epoch, i = divmod(position["i"], n)
        if epoch not in epoch_batches:
            epoch_batches.clear()
            epoch_batches[epoch] = _batches(tok, train, classes, cfg.batch_size, cfg.seq_len, seed=cfg.seed + epoch)
        position["i"] += 1
        idx, y, mask = epoch_batches[epoch][i]
        return idx.to(device), y.to(device), {"attn_mask": mask.to(device)}

    def loss_fn(m, batch):
        idx, y, kwargs = batch
        return F.cross_entropy(last_token_logits(m(idx, **kwargs), kwargs["attn_mask"]), y)

    settings = LoopSettings(max_steps=cfg.max_steps, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                            progress=cfg.progress)
    state = train_loop(model, optimizer, next_batch, settings, TrainState(), loss_fn=loss_fn)
    after, cm = evaluate(model, val_batches, len(classes), device)
    save_trainable_checkpoint(Path(cfg.out) / "checkpoint", model, optimizer,
                              {"run": dataclasses.asdict(cfg), "state": state.to_dict(), "classes": classes})
    summary = {"classes": classes, "accuracy_before": before, "accuracy_after": after,
               "confusion_matrix": cm.tolist(), "train": len(train), "held_out": len(held_out),
               "skipped_rows": skipped, "trainable_params": count_parameters(model, trainable_only=True),
               "steps": state.step, "time_per_step_s": state.elapsed_s / max(state.step, 1)}
    write_json_atomic(Path(cfg.out) / "summary.json", summary)
    log.info(f"classify: accuracy {before:.3f} -> {after:.3f}; confusion matrix (rows: true {classes}):\n"
             + "\n".join("  " + " ".join(f"{v:5d}" for v in row) for row in cm.tolist()))
    return summary
