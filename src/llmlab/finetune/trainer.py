"""Fine-tuning wired end to end: a base model and instruction data in; an adapter or a checkpoint out.

`FinetuneConfig` is the whole argument list (the CLI builds `llmlab finetune`'s
flags from it); `finetune(cfg)` loads the base (`llmlab.load`), reads and
tokenises the data (`llmlab.data.sft`, or the built-in `llmlab.data.tasks`),
measures held-out exact match, applies the method, trains with the shared
loop (`llmlab.train.loop`), measures again and writes `--out`:

    lora, qlora      adapter_config.json + adapter_model.safetensors (PEFT's layout; `llmlab.load(out)`
                     opens base + adapter), checkpoint/ (trainable weights + optimizer, for --resume)
    adapter, prompt  checkpoint/ (trainable weights + optimizer)
    full             an llmlab checkpoint folder (llmlab.json, model.safetensors, ...), resumable
    always           summary.json (parameters, memory, time per step, exact match before/after), history.json
"""

import dataclasses
import json
import re
import statistics
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from llmlab.common import log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device, seed_everything
from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic
from llmlab.data import sft
from llmlab.data.tasks import exact_match, train_test_tasks
from llmlab.finetune.adapters import apply_adapters
from llmlab.finetune.checkpoint import restore_trainable_checkpoint, save_trainable_checkpoint
from llmlab.finetune.lora import apply_lora
from llmlab.finetune.nf4 import apply_qlora
from llmlab.finetune.peft_format import save_peft_adapter
from llmlab.finetune.prompt_tuning import PromptTuned
from llmlab.models.gpt import count_parameters
from llmlab.train.loop import LoopSettings, TrainState, train_loop
from llmlab.train.objectives import causal_lm_loss
from llmlab.train.optim import make_adamw

METHODS = ("full", "lora", "qlora", "adapter", "prompt")
DEFAULT_LR = {"full": 5e-5, "lora": 2e-3, "qlora": 2e-3, "adapter": 1e-3, "prompt": 3e-2}



@dataclass
class FinetuneConfig:
    model: str = arg("smollm2-135m-instruct", "base model: alias, GGUF file, HF folder or llmlab checkpoint")
    data: str = arg("tasks", "'tasks' (built-in, generated offline), a .jsonl file, or a HF dataset name")
    method: str = arg("lora", "what trains", choices=METHODS)
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


RESUME_KEYS = ("model", "data", "method", "rank", "alpha", "dropout", "targets", "lr", "batch_size", "grad_accum",
               "seq_len", "packing", "seed", "n_train", "warmup_steps", "min_lr_ratio", "weight_decay")


def apply_method(model: nn.Module, cfg: FinetuneConfig) -> tuple[nn.Module, dict[str, Any]]:
    """Freeze/wrap `model` for the method; returns the model to train and notes (e.g. NF4 bytes)."""
    notes: dict[str, Any] = {}
    if cfg.method == "full":
        return model, notes
    if cfg.method == "lora":
        return apply_lora(model, cfg.rank, cfg.alpha, cfg.dropout, cfg.targets), notes
    if cfg.method == "qlora":
        notes["base_weight_bytes"] = apply_qlora(model, cfg.rank, cfg.alpha, cfg.dropout, cfg.targets)
        return model, notes
    if cfg.method == "adapter":
        return apply_adapters(model, cfg.rank), notes
    if cfg.method == "prompt":
        return PromptTuned(model, cfg.rank, seed=cfg.seed), notes
    raise UserError(f"--method {cfg.method}: unknown; choose one of {', '.join(METHODS)}")


def load_conversations(cfg: FinetuneConfig) -> tuple[list, list, int]:
    """(train conversations, held-out conversations, skipped rows)."""
    if cfg.data == "tasks":
        train, test = train_test_tasks(cfg.n_train, max(cfg.eval_examples, 32), seed=cfg.seed)
        return [t["messages"] for t in train], [t["messages"] for t in test], 0
    if Path(cfg.data).exists() or cfg.data.endswith(".jsonl"):
        data = sft.read_sft_jsonl(cfg.data, cfg.skip_bad_rows)
    else:
        data = sft.read_hf_dataset(cfg.data, skip_bad_rows=cfg.skip_bad_rows)
    train, val = sft.split_validation(data.examples, cfg.val_fraction, cfg.seed)
    return train, val, data.skipped


def generate_answers(model: nn.Module, tokenizer, conversations: list, max_new_tokens: int,
                     batch_size: int = 16) -> list[str]:
    """Greedy answers to each conversation's last assistant turn (the turns before it are the prompt)."""
    from llmlab.infer.generate import generate_batch

    stops = {tokenizer.eos_id, *[tokenizer.special_tokens[s] for s in ("<|im_end|>", "<|eot_id|>", "<|end|>")
                                 if s in tokenizer.special_tokens]} - {None}
    prompts = []
    for messages in conversations:
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompts.append(tokenizer.encode(tokenizer.render(messages[:last], add_generation_prompt=True),
                                        allowed_special="all"))
    answers = []
    for i in range(0, len(prompts), batch_size):
        outs = generate_batch(model, prompts[i:i + batch_size], max_new_tokens, temperature=0.0, stop_ids=stops,
                              use_cache=not isinstance(model, PromptTuned))
        answers += [tokenizer.decode([t for t in out if t not in stops]) for out in outs]
    return answers


def exact_match_score(model: nn.Module, tokenizer, conversations: list, max_new_tokens: int) -> tuple[float, list]:
    """Share of held-out conversations whose generated answer equals the reference (normalised)."""
    if not conversations:
        return float("nan"), []
    answers = generate_answers(model, tokenizer, conversations, max_new_tokens)
    refs = [[m for m in c if m["role"] == "assistant"][-1]["content"] for c in conversations]
    hits = [exact_match(a, r) for a, r in zip(answers, refs, strict=True)]
    return sum(hits) / len(hits), [{"answer": a, "reference": r} for a, r in zip(answers[:8], refs[:8], strict=True)]


class PeakMemory:
    """Peak memory while training: CUDA's allocator peak, or on Linux the process's peak resident set
    (reset through /proc/self/clear_refs). Reports MB; None where neither is available."""

    def __init__(self, device: torch.device):
        self.device = device
        self.start_mb = self._rss_mb("VmRSS")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        elif sys.platform.startswith("linux"):
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass

    @staticmethod
    def _rss_mb(field_name: str) -> float | None:
        try:
            text = Path("/proc/self/status").read_text()
        except OSError:
            return None
        m = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.M)
        return int(m.group(1)) / 1024 if m else None

    def peak_mb(self) -> float | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return self._rss_mb("VmHWM")


def _batches_from(examples: list, cfg: FinetuneConfig, row_len: int, pad_id: int, device: torch.device):
    """next_batch() for the loop: epochs of shuffled batches; `position` lets a resumed run continue exactly."""
    epochs: dict[int, list] = {}
    n = len(sft.make_batches(examples, cfg.batch_size, row_len, pad_id, cfg.packing, seed=cfg.seed))
    state = {"position": 0}

    def next_batch():
        epoch, i = divmod(state["position"], n)
        if epoch not in epochs:
            epochs.clear()
            epochs[epoch] = sft.make_batches(examples, cfg.batch_size, row_len, pad_id, cfg.packing,
                                             seed=cfg.seed + epoch)
        state["position"] += 1
        b = {k: v.to(device) for k, v in epochs[epoch][i].items()}
        kwargs = {k: b[k] for k in ("positions", "attn_mask") if k in b}
        return b["idx"], b["targets"], kwargs

    return next_batch, state


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


@torch.no_grad()
def validation_loss(model: nn.Module, batches: list, device: torch.device, amp_dtype: torch.dtype | None) -> float:
    """Mean loss per assistant token over `batches`."""
    model.eval()
    total, count = 0.0, 0
    for b in batches:
        b = {k: v.to(device) for k, v in b.items()}
        kwargs = {k: b[k] for k in ("positions", "attn_mask") if k in b}
        n = int((b["targets"] != sft.IGNORE_INDEX).sum())
        with _autocast(device, amp_dtype):
            total += sft_loss(model, (b["idx"], b["targets"], kwargs)).item() * n
        count += n
    return total / max(count, 1)


@contextmanager
def _head_removed(model: nn.Module):
    """Let the model return final hidden states (B, T, C) instead of logits; yields the LM head."""
    inner = model.model if isinstance(model, PromptTuned) else model
    head = inner.lm_head
    inner.lm_head = nn.Identity()
    try:
        yield head
    finally:
        inner.lm_head = head


def sft_loss(model: nn.Module, batch: tuple) -> torch.Tensor:
    """Cross-entropy over assistant tokens only, running the LM head on just those positions.

    In SFT most positions have no target (prompts, padding); the (B*T, vocab) logits for them would
    cost ~20% of a small model's compute and most of its activation memory, for nothing.
    """
    idx, targets, kwargs = batch
    keep = targets != sft.IGNORE_INDEX  # (B, T)
    with _head_removed(model) as head:
        hidden = model(idx, **kwargs)  # (B, T, C)
    return causal_lm_loss(head(hidden[keep])[None], targets[keep][None])  # (1, N, vocab) vs (1, N)


def _check_resume(cfg: FinetuneConfig, saved: dict, where: Path) -> None:
    diffs = [f"{k}: {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in RESUME_KEYS if saved.get(k) != getattr(cfg, k)]
    if diffs:
        raise UserError(f"--resume {where}: the run was started with other settings ({'; '.join(diffs[:4])}); "
                        "use the original settings or a new --out")


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune per `cfg`; returns the summary also written to <out>/summary.json."""
    from llmlab.models.pretrained import load
    from llmlab.train.checkpoint import read_meta, restore_training_state, save_checkpoint

    if cfg.method not in METHODS:
        raise UserError(f"--method {cfg.method}: unknown; choose one of {', '.join(METHODS)}")
    cfg.lr = DEFAULT_LR[cfg.method] if cfg.lr is None else cfg.lr
    seed_everything(cfg.seed)
    device, out = resolve_device(cfg.device), Path(cfg.out)
    amp_dtype = torch.bfloat16 if cfg.bf16 else None
    ckpt = out if cfg.method == "full" else out / "checkpoint"
    if out.exists() and any(out.iterdir()) and not cfg.resume:
        raise UserError(f"--out {out}: folder is not empty; pass --resume to continue it or choose a new --out")
    loaded = load(cfg.model)
    tokenizer = loaded.tokenizer
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise UserError(f"--model {cfg.model}: has no tokenizer with a chat template, needed to render SFT data")
    train_convs, val_convs, skipped = load_conversations(cfg)
    # rows must fit the context window, with room for the virtual tokens of prompt tuning
    row_len = min(cfg.seq_len, loaded.model.config.seq_len - (cfg.rank if cfg.method == "prompt" else 0))
    train_ex = sft.tokenize_dataset(tokenizer, train_convs, row_len)
    val_ex = sft.tokenize_dataset(tokenizer, val_convs, row_len) if val_convs else []
    held_out = val_convs[:cfg.eval_examples]
    log.info(f"finetune: {len(train_ex)} training and {len(val_ex)} held-out examples ({skipped} bad rows skipped)")
    model = loaded.model.to(device)
    saved: dict[str, Any] = {}
    if cfg.resume:
        saved = read_meta(ckpt) if cfg.method == "full" else _read_json(ckpt / "finetune.json", ckpt)
        _check_resume(cfg, saved.get("run", {}), ckpt)
    before = saved.get("exact_match_before")
    if held_out and before is None:
        with _autocast(device, amp_dtype):
            before, _ = exact_match_score(model, tokenizer, held_out, cfg.max_new_tokens)
        log.info(f"finetune: held-out exact match before training: {before:.3f}")
    total_params = count_parameters(model)
    model, notes = apply_method(model, cfg)
    model.to(device)
    trainable = count_parameters(model, trainable_only=True)
    log.info(f"finetune: {cfg.method}: {trainable:,} trainable of {total_params:,} parameters "
             f"({100 * trainable / total_params:.3f}%)")
    optimizer = make_adamw(model, cfg.lr, cfg.weight_decay, device_type=device.type)
    state = TrainState()
    if cfg.resume:
        meta = restore_training_state(ckpt, model, optimizer) if cfg.method == "full" else \
            restore_trainable_checkpoint(ckpt, model, optimizer)
        state = TrainState(**{k: meta["state"][k] for k in ("step", "tokens_seen", "elapsed_s", "bad_steps",
                                                             "history")})
        log.info(f"finetune: resumed {ckpt} at step {state.step}")
    next_batch, position = _batches_from(train_ex, cfg, row_len, tokenizer.pad_id, device)
    position["position"] = state.step * cfg.grad_accum
    val_batches = sft.make_batches(val_ex, cfg.batch_size, row_len, tokenizer.pad_id, cfg.packing)[:4]
    run = dataclasses.asdict(cfg)

    def save(st: TrainState) -> None:
        meta = {"run": run, "state": st.to_dict(), "exact_match_before": before}
        if cfg.method == "full":
            save_checkpoint(ckpt, model, tokenizer, meta, optimizer)
        else:
            save_trainable_checkpoint(ckpt, model, optimizer, meta)

    settings = LoopSettings(max_steps=cfg.max_steps, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                            min_lr_ratio=cfg.min_lr_ratio, grad_accum=cfg.grad_accum, grad_clip=cfg.grad_clip,
                            eval_interval=cfg.eval_interval, ckpt_interval=cfg.ckpt_interval,
                            max_seconds=cfg.max_minutes * 60 if cfg.max_minutes else None, progress=cfg.progress)
    memory = PeakMemory(device)
    first_step = state.step
    evaluate = (lambda: validation_loss(model, val_batches, device, amp_dtype)) if val_batches else None
    state = train_loop(model, optimizer, next_batch, settings, state, evaluate=evaluate, save=save,
                       loss_fn=sft_loss, autocast_dtype=amp_dtype)
    peak = memory.peak_mb()
    after, samples = None, []
    if held_out:
        with _autocast(device, amp_dtype):
            after, samples = exact_match_score(model, tokenizer, held_out, cfg.max_new_tokens)
    if cfg.method in ("lora", "qlora"):
        base = str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model
        save_peft_adapter(model, out, base_model_name_or_path=base)
    rows = [r for r in state.history[first_step:] if "tokens_per_s" in r]
    summary = {
        "method": cfg.method, "model": cfg.model, "steps": state.step, "trainable_params": trainable,
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
    return summary


def _read_json(path: Path, ckpt: Path) -> dict:
    if not path.is_file():
        raise UserError(f"--resume: {ckpt} holds no fine-tuning checkpoint; drop --resume or fix --out")
    return json.loads(path.read_text())
