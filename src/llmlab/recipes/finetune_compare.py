"""`llmlab finetune compare`: the same task, base and budget for several methods, side by side.

Each method runs in a fresh process (so peak memory is its own), writes its
folder under --out, and the table of trainable parameters, peak memory, time
per step, validation loss and held-out exact match before/after goes to
<out>/compare.md and <out>/compare.json.
"""

import dataclasses
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from llmlab.common import log
from llmlab.common.io import write_json_atomic, write_text_atomic
from llmlab.finetune.trainer import METHODS, FinetuneConfig, finetune


@dataclass
class CompareArgs:
    model: str = field(default="smollm2-135m-instruct", metadata={"help": "base model (alias or path)"})
    data: str = field(default="tasks", metadata={"help": "'tasks' or a .jsonl file, as in `llmlab finetune`"})
    methods: list[str] = field(default_factory=lambda: list(METHODS),
                               metadata={"help": "methods to compare", "choices": METHODS})
    out: str = field(default="runs/finetune-compare", metadata={"help": "folder for each run and the table"})
    max_steps: int = field(default=30, metadata={"help": "optimizer steps per method"})
    batch_size: int = field(default=4, metadata={"help": "rows per step"})
    seq_len: int = field(default=256, metadata={"help": "tokens per row"})
    rank: int = field(default=8, metadata={"help": "LoRA rank / adapter width / virtual tokens"})
    n_train: int = field(default=2000, metadata={"help": "built-in tasks: training examples"})
    eval_examples: int = field(default=64, metadata={"help": "held-out examples scored by exact match"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda or auto"})
    bf16: bool = field(default=False, metadata={"help": "autocast matmuls to bfloat16"})
    max_minutes: float | None = field(default=None, metadata={"help": "time cap per method (minutes)"})
    seed: int = field(default=0, metadata={"help": "seed shared by every run"})
    isolate: bool = field(default=True, metadata={"help": "run each method in its own process (clean peak memory)"})


COLUMNS = [("method", "method", "{}"), ("trainable params", "trainable_params", "{:,}"),
           ("trainable %", "trainable_percent", "{:.3f}"), ("peak memory MB", "peak_memory_mb", "{:.0f}"),
           ("time/step s", "time_per_step_s", "{:.2f}"), ("val loss", "val_loss", "{:.3f}"),
           ("exact match before", "exact_match_before", "{:.3f}"), ("exact match after", "exact_match_after", "{:.3f}")]


def table(rows: list[dict]) -> str:
    """Markdown table, one row per method."""
    head = "| " + " | ".join(c for c, _, _ in COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    cell = lambda r, key, fmt: fmt.format(r[key]) if r.get(key) is not None else "-"
    return head + "".join("| " + " | ".join(cell(r, k, f) for _, k, f in COLUMNS) + " |\n" for r in rows)


def run(args: CompareArgs) -> list[dict]:
    rows = []
    shared = {f.name: getattr(args, f.name) for f in dataclasses.fields(args)
              if f.name in {g.name for g in dataclasses.fields(FinetuneConfig)} and f.name != "out"}
    for method in args.methods:
        cfg = FinetuneConfig(**shared, method=method, out=str(Path(args.out) / method), progress=False)
        log.info(f"finetune-compare: {method}")
        if args.isolate:
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                summary = pool.submit(finetune, cfg).result()
        else:
            summary = finetune(cfg)
        rows.append({k: v for k, v in summary.items() if k != "samples"})
    text = table(rows)
    write_text_atomic(Path(args.out) / "compare.md", text)
    write_json_atomic(Path(args.out) / "compare.json", rows)
    log.info(text)
    return rows
