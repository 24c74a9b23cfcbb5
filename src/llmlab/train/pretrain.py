"""Pretraining wired end to end: shards + config in, a checkpoint folder out.

`PretrainConfig` is the whole argument list (the CLI builds its flags from it);
`pretrain(cfg)` builds the model, optimizer and sampler, resumes if asked,
runs the loop and writes `<out>/checkpoint`, `<out>/run_config.json` and
`<out>/history.json`. Shared training flags: --out, --max-steps, --resume,
--device, --seed.
"""

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from llmlab.common import log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device, seed_everything
from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic
from llmlab.data.loader import WindowSampler, read_manifest, sequential_windows
from llmlab.data.shards import TOKENIZER_FILE
from llmlab.models import Transformer, get_preset
from llmlab.models.config import PRESETS
from llmlab.models.gpt import count_parameters, flops_per_token
from llmlab.train.checkpoint import read_meta, restore_training_state, save_checkpoint
from llmlab.train.loop import LoopSettings, TrainState, evaluate_loss, train_loop
from llmlab.train.optim import make_adamw


@dataclass
class PretrainConfig:
    data: str = arg("runs/data", "folder written by `llmlab data prepare` (manifest.json + shards)")
    out: str = arg("runs/pretrain", "run folder: checkpoint/, run_config.json, history.json")
    preset: str = arg("llama-small", "model preset", choices=sorted(PRESETS))
    seq_len: int | None = arg(None, "context length (default: the preset's)")
    dropout: float = arg(0.0, "dropout probability")
    batch_size: int = arg(16, "sequences per micro-batch")
    grad_accum: int = arg(1, "micro-batches per optimizer step")
    lr: float = arg(3e-3, "peak learning rate")
    min_lr_ratio: float = arg(0.1, "final learning rate as a fraction of the peak")
    warmup_steps: int = arg(30, "linear warmup steps")
    weight_decay: float = arg(0.1, "AdamW decoupled weight decay (matrices only)")
    grad_clip: float = arg(1.0, "clip the global gradient norm to this (0: off)")
    max_steps: int = arg(500, "optimizer steps in the whole run (sets the cosine schedule)")
    max_minutes: float | None = arg(None, "stop (and checkpoint) after this many minutes of training")
    stop_at: int | None = arg(None, "stop (and checkpoint) after this step; --resume later continues the schedule")
    schedule_by_time: bool = arg(False, "with --max-minutes: decay the learning rate over the time budget, "
                                       "max_steps becoming an upper bound (fills the budget on any machine)")
    eval_interval: int = arg(100, "steps between validation losses")
    eval_tokens: int = arg(32768, "validation tokens per periodic evaluation")
    ckpt_interval: int = arg(200, "steps between checkpoints (one is always written at the end)")
    device: str = arg("auto", "cpu, cuda, cuda:N or auto")
    compile: bool = arg(False, "torch.compile the model")
    seed: int = arg(1337, "seed for weights, sampling and dropout")
    resume: bool = arg(False, "continue from <out>/checkpoint exactly where it stopped")
    skip_bad_steps: int = arg(0, "skip up to N steps whose loss is not finite (default: stop at the first)")
    progress: bool = arg(True, "show a progress bar")


# Settings that must not change across a resume (max_steps and max_minutes may, to extend a run).
RESUME_KEYS = ("preset", "seq_len", "dropout", "batch_size", "grad_accum", "lr", "min_lr_ratio", "warmup_steps",
               "weight_decay", "grad_clip", "seed")


def _check_resume(cfg: PretrainConfig, meta: dict, model_config: dict, ckpt: Path) -> None:
    saved = meta.get("run", {})
    diffs = [f"{k}: {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in RESUME_KEYS if saved.get(k) != getattr(cfg, k)]
    diffs += [f"model.{k}: {meta['model'].get(k)!r} -> {v!r}" for k, v in model_config.items()
              if meta["model"].get(k) != v]
    if diffs:
        raise UserError(f"--resume {ckpt}: the checkpoint was made with a different config ({'; '.join(diffs[:4])}); "
                        "use the original settings or a new --out")


def pretrain(cfg: PretrainConfig) -> dict:
    """Train per `cfg`; returns a summary (n_params, tokens_seen, tokens_per_s, final losses, paths)."""
    from llmlab.tokenizer import Tokenizer

    out = Path(cfg.out)
    ckpt = out / "checkpoint"
    device = resolve_device(cfg.device)
    manifest = read_manifest(cfg.data)
    tokenizer = Tokenizer.load(Path(cfg.data) / manifest.get("tokenizer", TOKENIZER_FILE))
    seed_everything(cfg.seed)
    overrides = {"vocab_size": manifest["vocab_size"], "dropout": cfg.dropout}
    if cfg.seq_len:
        overrides["seq_len"] = cfg.seq_len
    model_config = get_preset(cfg.preset, **overrides)
    model = Transformer(model_config).to(device)
    optimizer = make_adamw(model, cfg.lr, cfg.weight_decay, device_type=device.type)
    sampler = WindowSampler(cfg.data, "train", cfg.batch_size, model_config.seq_len, seed=cfg.seed)
    state = TrainState()
    if cfg.resume:
        meta = read_meta(ckpt)
        _check_resume(cfg, meta, model_config.to_dict(), ckpt)
        restore_training_state(ckpt, model, optimizer)
        sampler.load_state_dict(meta["sampler"])
        state = TrainState(**meta["state"])
        log.info(f"resumed from {ckpt} at step {state.step}")
        if state.step >= cfg.max_steps:
            raise UserError(f"--resume {ckpt}: the run already reached step {state.step}; raise --max-steps to go on")
    elif (ckpt / "llmlab.json").exists():
        raise UserError(f"{ckpt} already exists; pass --resume to continue it or choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "run_config.json", {"pretrain": dataclasses.asdict(cfg), "model": model_config.to_dict()})

    amp_dtype = torch.bfloat16 if device.type == "cuda" else None  # float32 on CPU: bf16 matmuls are slow there
    train_model = torch.compile(model) if cfg.compile else model
    n_params = count_parameters(model)
    log.info(f"model: {cfg.preset}, {n_params / 1e6:.2f}M parameters, on {device}")

    def next_batch():
        idx, targets = sampler.next_batch()
        return idx.to(device, non_blocking=True), targets.to(device, non_blocking=True)

    def evaluate() -> float:
        batches = sequential_windows(cfg.data, "val", cfg.batch_size, model_config.seq_len, cfg.eval_tokens)
        total, count = evaluate_loss(model, batches, amp_dtype)
        return total / max(count, 1)

    def save(st: TrainState) -> None:
        meta = {"run": dataclasses.asdict(cfg), "state": st.to_dict(), "sampler": sampler.state_dict(),
                "tokens_seen": st.tokens_seen, "step": st.step}
        save_checkpoint(ckpt, model, tokenizer, meta, optimizer)
        write_json_atomic(out / "history.json", st.history)

    settings = LoopSettings(max_steps=cfg.max_steps, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                            min_lr_ratio=cfg.min_lr_ratio, grad_accum=cfg.grad_accum, grad_clip=cfg.grad_clip,
                            eval_interval=cfg.eval_interval, ckpt_interval=cfg.ckpt_interval,
                            max_seconds=cfg.max_minutes * 60 if cfg.max_minutes else None, stop_at=cfg.stop_at,
                            schedule_by_time=cfg.schedule_by_time,
                            skip_bad_steps=cfg.skip_bad_steps, progress=cfg.progress,
                            flops_per_token=flops_per_token(model_config))
    t0 = time.perf_counter()
    state = train_loop(train_model, optimizer, next_batch, settings, state, evaluate=evaluate, save=save,
                       autocast_dtype=amp_dtype)
    wall = time.perf_counter() - t0
    rows = state.history
    trained = [r for r in rows if "tokens_per_s" in r]
    return {
        "checkpoint": str(ckpt), "n_params": n_params, "steps": state.step, "tokens_seen": state.tokens_seen,
        "train_wall_s": wall, "tokens_per_s": (sum(r["tokens_per_s"] for r in trained[-50:]) / len(trained[-50:]))
        if trained else 0.0, "final_train_loss": rows[-1]["loss"] if rows else None,
        "final_val_loss": next((r["val_loss"] for r in reversed(rows) if "val_loss" in r), None),
        "history": rows, "model": model, "tokenizer": tokenizer, "model_config": model_config,
    }
