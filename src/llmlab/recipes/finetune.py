"""`llmlab finetune`, `llmlab finetune compare` and `llmlab merge`: supervised fine-tuning end to end.

    llmlab finetune --model smollm2-135m-instruct --data tasks --method lora --max-steps 60 --out runs/lora
    llmlab finetune compare --methods lora prompt --max-steps 30
    llmlab merge runs/lora --out runs/lora-merged

`run` loads the base (`llmlab.load`), reads and tokenises the data (`llmlab.data.sft`),
scores held-out exact match (`llmlab.eval.exact_match`), applies the method
(`llmlab.finetune.methods`), trains on the shared loop with the assistant-only
loss (`llmlab.train.objectives.sft_loss`), scores again and writes `--out`:

    full            an llmlab checkpoint folder (llmlab.json, model.safetensors, tokenizer, trainer state)
    other methods   checkpoint/ (trainable weights naming the base and the method, trainer state);
                    lora and qlora also adapter_config.json + adapter_model.safetensors (PEFT's layout)
    always          summary.json (parameters, memory, time per step, exact match before/after), history.json

`llmlab.load(out)` opens every one of them as the model was when training ended.
"""

import dataclasses
import multiprocessing
import statistics
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmlab.common import checkpoint, log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device, seed_everything
from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic, write_text_atomic
from llmlab.common.measure import PeakMemory
from llmlab.data import sft
from llmlab.data.loader import EpochBatches
from llmlab.eval.exact_match import exact_match_score
from llmlab.eval.loss import mean_heldout_loss
from llmlab.finetune.lora import lora_modules, unwrap_lora
from llmlab.finetune.methods import SFT_METHODS, apply_method
from llmlab.finetune.peft_format import save_peft_adapter
from llmlab.loading import load
from llmlab.models.gpt import count_parameters
from llmlab.quantize import dequantize_model
from llmlab.train.loop import LoopSettings, TrainState, train_loop
from llmlab.train.objectives import sft_loss
from llmlab.train.optim import make_adamw

DEFAULT_LR = {"full": 5e-5, "lora": 2e-3, "qlora": 2e-3, "adapter": 1e-3, "prompt": 3e-2}


@dataclass
class FinetuneArgs:
    model: str = arg("smollm2-135m-instruct", "base model: alias, GGUF file, HF folder or llmlab checkpoint")
    data: str = arg("tasks", "'tasks' (built-in, generated offline), a .jsonl file, or a HF dataset name")
    method: str = arg("lora", "what trains", choices=SFT_METHODS)
    out: str = arg("runs/finetune", "output folder (adapter files or a full checkpoint, summary.json)")
    rank: int = arg(8, "LoRA rank; adapter bottleneck width; number of virtual tokens for prompt tuning")
    alpha: float = arg(16.0, "LoRA alpha (the update is scaled by alpha/rank)")
    dropout: float = arg(0.0, "dropout on the LoRA input")
    targets: list[str] = arg(["q_proj", "v_proj"], "LoRA target modules: names, dotted suffixes or regexes")
    lr: float | None = arg(None, "peak learning rate (default per method: full 5e-5, lora/qlora 2e-3, "
                                "adapter 1e-3, prompt 3e-2)")
    min_lr_ratio: float = arg(0.1, "final learning rate as a fraction of the peak")
    warmup_steps: int = arg(10, "linear warmup steps")
    weight_decay: float = arg(0.0, "AdamW decoupled weight decay (matrices only)")
    grad_clip: float = arg(1.0, "clip the global gradient norm to this (0: off)")
    batch_size: int = arg(4, "rows per micro-batch (packed rows hold several examples)")
    grad_accum: int = arg(1, "micro-batches per optimizer step")
    seq_len: int = arg(256, "tokens per row; longer examples are cut")
    packing: bool = arg(True, "pack short examples into rows (attention stays within each example)")
    max_steps: int = arg(100, "optimizer steps in the whole run")
    max_minutes: float | None = arg(None, "stop (and save) after this many minutes of training")
    val_fraction: float = arg(0.1, "share of a data file held out for validation")
    eval_interval: int = arg(0, "steps between validation losses (0: at the end)")
    ckpt_interval: int = arg(50, "steps between checkpoints (one is always written at the end)")
    n_train: int = arg(2000, "built-in tasks: training examples")
    eval_examples: int = arg(64, "held-out examples scored by exact match before and after (0: skip)")
    max_new_tokens: int = arg(12, "tokens generated per exact-match answer")
    skip_bad_rows: bool = arg(False, "skip malformed data rows (counted in the summary) instead of stopping")
    device: str = arg("auto", "cpu, cuda, cuda:N or auto")
    bf16: bool = arg(False, "autocast matmuls to bfloat16 (fast on GPUs and on CPUs with AMX)")
    seed: int = arg(0, "seed for adapter init, data order and dropout")
    resume: bool = arg(False, "continue from the checkpoint in --out exactly where it stopped")
    progress: bool = arg(True, "show a progress bar")


# Settings that must not change across a resume (max_steps and max_minutes may, to extend a run).
RESUME_KEYS = ("model", "data", "method", "rank", "alpha", "dropout", "targets", "lr", "batch_size", "grad_accum",
               "seq_len", "packing", "seed", "n_train", "warmup_steps", "min_lr_ratio", "weight_decay")


def method_spec(args: FinetuneArgs) -> dict[str, Any]:
    """What `llmlab.finetune.methods.apply_method` needs, saved with the weights so `llmlab.load` can rebuild."""
    return {"name": args.method, "rank": args.rank, "alpha": args.alpha, "dropout": args.dropout,
            "targets": list(args.targets), "seed": args.seed}


def run(args: FinetuneArgs) -> dict[str, Any]:
    """Fine-tune per `args`; returns the summary also written to <out>/summary.json, plus the trained
    model and its tokenizer."""
    if args.method not in SFT_METHODS:
        raise UserError(f"--method {args.method}: unknown; choose one of {', '.join(SFT_METHODS)}")
    args = dataclasses.replace(args, lr=DEFAULT_LR[args.method] if args.lr is None else args.lr)
    seed_everything(args.seed)
    device, out = resolve_device(args.device), Path(args.out)
    amp = lambda: torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else nullcontext()  # noqa: E731
    ckpt = out if args.method == "full" else out / "checkpoint"
    if out.exists() and any(out.iterdir()) and not args.resume:
        raise UserError(f"--out {out}: folder is not empty; pass --resume to continue it or choose a new --out")
    if args.resume and not checkpoint.is_checkpoint(ckpt):
        raise UserError(f"--resume: {ckpt} holds no fine-tuning checkpoint; drop --resume or fix --out")
    loaded = load(args.model)
    tokenizer = loaded.tokenizer
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise UserError(f"--model {args.model}: has no tokenizer with a chat template, needed to render SFT data")
    train_convs, val_convs, skipped = sft.load_conversations(args.data, args.val_fraction, args.seed,
                                                             args.skip_bad_rows, args.n_train,
                                                             max(args.eval_examples, 32))
    # rows must fit the context window, with room for the virtual tokens of prompt tuning
    row_len = min(args.seq_len, loaded.model.config.seq_len - (args.rank if args.method == "prompt" else 0))
    train_ex = sft.tokenize_dataset(tokenizer, train_convs, row_len)
    val_ex = sft.tokenize_dataset(tokenizer, val_convs, row_len) if val_convs else []
    held_out = val_convs[:args.eval_examples]
    log.info(f"finetune: {len(train_ex)} training and {len(val_ex)} held-out examples ({skipped} bad rows skipped)")
    model = loaded.model.to(device)
    saved: dict[str, Any] = {}
    if args.resume:
        saved = checkpoint.read_meta(ckpt)
        checkpoint.check_resume(saved.get("run", {}), dataclasses.asdict(args), RESUME_KEYS, f"--resume {ckpt}")
    before = saved.get("exact_match_before")
    if held_out and before is None:
        with amp():
            before, _ = exact_match_score(model, tokenizer, held_out, args.max_new_tokens)
        log.info(f"finetune: held-out exact match before training: {before:.3f}")
    total_params = count_parameters(model)
    model, notes = apply_method(model, method_spec(args))
    model.to(device)
    trainable = count_parameters(model, trainable_only=True)
    log.info(f"finetune: {args.method}: {trainable:,} trainable of {total_params:,} parameters "
             f"({100 * trainable / total_params:.3f}%)")
    optimizer = make_adamw(model, args.lr, args.weight_decay, device_type=device.type)
    state = TrainState()
    if args.resume:
        meta = checkpoint.restore_training_state(ckpt, model, optimizer)
        state = TrainState(**meta["state"])
        log.info(f"finetune: resumed {ckpt} at step {state.step}")
    batches = EpochBatches(lambda epoch: sft.make_batches(train_ex, args.batch_size, row_len, tokenizer.pad_id,
                                                          args.packing, seed=args.seed + epoch),
                           position=state.step * args.grad_accum)
    val_batches = [sft.as_model_batch(b) for b in
                   sft.make_batches(val_ex, args.batch_size, row_len, tokenizer.pad_id, args.packing)[:4]]
    record = dataclasses.asdict(args)

    def save(st: TrainState) -> None:
        meta = {"run": record, "state": st.to_dict(), "exact_match_before": before}
        if args.method == "full":
            checkpoint.save_checkpoint(ckpt, model, meta, tokenizer=tokenizer, optimizer=optimizer)
        else:
            meta.update(base=checkpoint.base_reference(args.model), method=method_spec(args))
            checkpoint.save_checkpoint(ckpt, model, meta, optimizer=optimizer, trainable_only=True)

    settings = LoopSettings(max_steps=args.max_steps, lr=args.lr, warmup_steps=args.warmup_steps,
                            min_lr_ratio=args.min_lr_ratio, grad_accum=args.grad_accum, grad_clip=args.grad_clip,
                            eval_interval=args.eval_interval, ckpt_interval=args.ckpt_interval,
                            max_seconds=args.max_minutes * 60 if args.max_minutes else None, progress=args.progress)
    memory = PeakMemory(device)
    first_step = state.step
    amp_dtype = torch.bfloat16 if args.bf16 else None
    evaluate = (lambda: mean_heldout_loss(model, val_batches, amp_dtype)) if val_batches else None
    state = train_loop(model, optimizer, lambda: sft.as_model_batch(batches(), device), settings, state,
                       evaluate=evaluate, save=save, loss_fn=sft_loss, autocast_dtype=amp_dtype)
    peak = memory.peak_mb()
    after, samples = None, []
    if held_out:
        with amp():
            after, samples = exact_match_score(model, tokenizer, held_out, args.max_new_tokens)
    if args.method in ("lora", "qlora"):
        save_peft_adapter(model, out, base_model_name_or_path=checkpoint.base_reference(args.model))
    rows = [r for r in state.history[first_step:] if "tokens_per_s" in r]
    summary = {
        "method": args.method, "model": args.model, "steps": state.step, "trainable_params": trainable,
        "total_params": total_params, "trainable_percent": 100 * trainable / total_params,
        "time_per_step_s": state.elapsed_s / max(state.step, 1),
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows) if rows else None,
        "peak_memory_mb": peak, "memory_at_start_mb": memory.start_mb,
        "final_loss": state.history[-1]["loss"] if state.history else None,
        "val_loss": next((r["val_loss"] for r in reversed(state.history) if "val_loss" in r), None),
        "exact_match_before": before, "exact_match_after": after, "held_out": len(held_out),
        "skipped_rows": skipped, "samples": samples, **notes,
    }
    write_json_atomic(out / "summary.json", summary)
    write_json_atomic(out / "history.json", state.history)
    em = f"; held-out exact match {before:.3f} -> {after:.3f}" if after is not None else ""
    log.info(f"done: {args.method}, {state.step} steps, {summary['time_per_step_s']:.2f} s/step{em}; "
             f"output in {out}")
    return {**summary, "model": model, "tokenizer": tokenizer}


def run_for_table(args: FinetuneArgs) -> dict[str, Any]:
    """`run`, keeping only what a comparison table needs (no model, no samples): cheap to send between processes."""
    return {k: v for k, v in run(args).items() if k not in ("model", "tokenizer", "samples")}


@dataclass
class CompareArgs:
    model: str = arg("smollm2-135m-instruct", "base model (alias or path)")
    data: str = arg("tasks", "'tasks' or a .jsonl file, as in `llmlab finetune`")
    methods: list[str] = arg(list(SFT_METHODS), "methods to compare", choices=SFT_METHODS)
    out: str = arg("runs/finetune-compare", "folder for each run and the table")
    max_steps: int = arg(30, "optimizer steps per method")
    batch_size: int = arg(4, "rows per step")
    seq_len: int = arg(256, "tokens per row")
    rank: int = arg(8, "LoRA rank / adapter width / virtual tokens")
    n_train: int = arg(2000, "built-in tasks: training examples")
    eval_examples: int = arg(64, "held-out examples scored by exact match")
    device: str = arg("auto", "cpu, cuda or auto")
    bf16: bool = arg(False, "autocast matmuls to bfloat16")
    max_minutes: float | None = arg(None, "time cap per method (minutes)")
    seed: int = arg(0, "seed shared by every run")
    isolate: bool = arg(True, "run each method in its own process (clean peak memory)")


COLUMNS = [("method", "method", "{}"), ("trainable params", "trainable_params", "{:,}"),
           ("trainable %", "trainable_percent", "{:.3f}"), ("peak memory MB", "peak_memory_mb", "{:.0f}"),
           ("time/step s", "time_per_step_s", "{:.2f}"), ("val loss", "val_loss", "{:.3f}"),
           ("exact match before", "exact_match_before", "{:.3f}"), ("exact match after", "exact_match_after", "{:.3f}")]
RUN_TIMEOUT_S = 6 * 3600  # a compared run with no --max-minutes still ends; a hung worker must not block forever


def table(rows: list[dict]) -> str:
    """Markdown table, one row per method."""
    head = "| " + " | ".join(c for c, _, _ in COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    cell = lambda r, key, fmt: fmt.format(r[key]) if r.get(key) is not None else "-"  # noqa: E731
    return head + "".join("| " + " | ".join(cell(r, k, f) for _, k, f in COLUMNS) + " |\n" for r in rows)


def compare(args: CompareArgs) -> list[dict]:
    """Run `llmlab finetune` once per method with the same base, data and budget; write compare.md/.json."""
    rows = []
    shared = {f.name: getattr(args, f.name) for f in dataclasses.fields(args)
              if f.name in {g.name for g in dataclasses.fields(FinetuneArgs)} and f.name != "out"}
    timeout = args.max_minutes * 120 + 900 if args.max_minutes else RUN_TIMEOUT_S
    for method in args.methods:
        one = FinetuneArgs(**shared, method=method, out=str(Path(args.out) / method), progress=False)
        log.info(f"finetune compare: {method}")
        if args.isolate:
            try:
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                    summary = pool.submit(run_for_table, one).result(timeout=timeout)
            except BrokenProcessPool:
                raise UserError("finetune compare: the worker process died (out of memory, or a script without "
                                "`if __name__ == '__main__':`); rerun with --no-isolate") from None
        else:
            summary = run_for_table(one)
        rows.append(summary)
    text = table(rows)
    write_text_atomic(Path(args.out) / "compare.md", text)
    write_json_atomic(Path(args.out) / "compare.json", rows)
    log.info(text)
    return rows


@dataclass
class MergeArgs:
    adapter: str = arg(dataclasses.MISSING, "a LoRA or QLoRA run folder, or a PEFT adapter folder", positional=True)
    out: str | None = arg(None, "where to write the merged checkpoint (default: <adapter>-merged)")


def merge(args: MergeArgs) -> str:
    """Fold a LoRA adapter into its base and write a full llmlab checkpoint that `llmlab.load` opens."""
    source = Path(args.adapter.rstrip("/"))
    out = args.out or str(source.with_name(source.name + "-merged"))
    loaded = load(source)
    if not lora_modules(loaded.model):
        raise UserError(f"{args.adapter}: holds no LoRA layers to merge; merge works on lora and qlora outputs")
    if loaded.tokenizer is None:
        raise UserError(f"{args.adapter}: the base model has no tokenizer; cannot write a full checkpoint")
    dequantize_model(unwrap_lora(loaded.model))  # a QLoRA base comes back as float weights
    checkpoint.save_checkpoint(out, loaded.model, {"merged_from": str(args.adapter)}, tokenizer=loaded.tokenizer)
    log.info(f"merged {args.adapter} into its base: {out}")
    return out
