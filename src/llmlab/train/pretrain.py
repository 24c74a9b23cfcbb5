"""Pretraining on prepared shards: a model config and loop settings in, a checkpoint folder out.

`pretrain(...)` builds the model, optimizer and window sampler, resumes
exactly if asked (weights, optimizer moments, RNG and sampler state), runs the
shared loop and writes `<out>/checkpoint` (see `llmlab.common.checkpoint`) and
`<out>/history.json`. The `llmlab pretrain` and `llmlab speedrun` recipes both
call it with their own settings; scaling sweeps can call it many times. With a
`strategy` other than "none" it runs as one of several processes (a process
group must be joined: `llmlab.train.distributed`); `batch_size` is then per
data-parallel process, and the checkpoint is the same folder one process writes.
"""

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from llmlab.common import checkpoint, log
from llmlab.common.constants import TOKENIZER_FILE
from llmlab.common.device import seed_everything
from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic
from llmlab.data.loader import WindowSampler, read_manifest, sequential_windows
from llmlab.eval.loss import mean_heldout_loss
from llmlab.models import ModelConfig, Transformer
from llmlab.models.gpt import count_parameters, flops_per_token
from llmlab.train import distributed
from llmlab.train.loop import LoopSettings, TrainState, autocast, autocast_dtype, train_loop
from llmlab.train.moe_loss import moe_lm_loss
from llmlab.train.objectives import lm_loss
from llmlab.train.optimizers import build_optimizer


def pretrain(model_config: ModelConfig, data_dir: str | Path, out: str | Path, settings: LoopSettings, *,
             batch_size: int, weight_decay: float = 0.1, seed: int = 1337, device: torch.device | str = "cpu",
             compile: bool = False, eval_tokens: int = 32768, resume: bool = False,
             run: dict[str, Any] | None = None, resume_keys: Iterable[str] = (), optimizer_name: str = "adamw",
             strategy: str = "none", tp_size: int | None = None, mixed_precision: str = "none",
             precision: str = "auto") -> dict:
    """Train a fresh `Transformer(model_config)` (or resume `<out>/checkpoint`) on the shards in `data_dir`.

    `run` (the caller's arguments) is stored in every checkpoint; on resume, the keys in `resume_keys`
    and the model config must equal the stored ones. `optimizer_name` is a key of
    `llmlab.train.optimizers.OPTIMIZERS`. `precision` is the autocast dtype (`llmlab.train.loop.PRECISIONS`).
    `strategy`, `tp_size` and `mixed_precision`: see
    `llmlab.train.distributed`; `run["global_batch"]` (batch_size times the data-parallel processes) is
    set here, and a run may resume on another number of processes if it is unchanged. Returns a summary:
    n_params, steps, tokens_seen, tokens_per_s, final losses, history, and the trained model (sharded,
    under fsdp or tp) and tokenizer.
    """
    from llmlab.tokenizer import Tokenizer

    out, device = Path(out), torch.device(device)
    ckpt = out / "checkpoint"
    run = dict(run or {})
    manifest = read_manifest(data_dir)
    tokenizer = Tokenizer.load(Path(data_dir) / manifest.get("tokenizer", TOKENIZER_FILE))
    check_precision(precision, strategy)
    layout = distributed.make_layout(strategy, model_config, device, tp_size, mixed_precision)
    device = layout.device
    run["global_batch"] = batch_size * layout.dp
    seed_everything(seed)  # the same seed everywhere: equal initial weights, equal dropout masks
    model = Transformer(model_config).to(device)
    train_model = distributed.parallelize(model, layout, mixed_precision)
    optimizer = distributed.make_optimizer(optimizer_name, model, settings.lr, weight_decay, layout)
    sampler = WindowSampler(data_dir, "train", batch_size * layout.dp, model_config.seq_len, seed=seed,
                            rank=layout.dp_rank, world_size=layout.dp)
    state = TrainState()
    if resume:
        meta = checkpoint.read_meta(ckpt)
        saved_run = meta.get("run", {})
        saved_run.setdefault("global_batch", saved_run.get("batch_size"))  # folders from before processes
        checkpoint.check_resume(saved_run, run, resume_keys, ckpt)
        checkpoint.check_resume(meta["model"], model_config.to_dict(), model_config.to_dict(), ckpt)
        distributed.restore_training_state(ckpt, model, optimizer, layout)
        sampler.load_state_dict(meta["sampler"])
        state = TrainState(**meta["state"])
        log.info(f"resumed from {ckpt} at step {state.step}")
        if state.step >= settings.max_steps:
            raise UserError(f"{ckpt}: the run already reached step {state.step}; raise max_steps to go on")
    elif checkpoint.is_checkpoint(ckpt):
        raise UserError(f"{ckpt} already exists; resume it or choose a new output folder")
    out.mkdir(parents=True, exist_ok=True)
    amp_dtype = autocast_dtype(precision, device)
    _orthogonalise_in(optimizer, amp_dtype)
    train_model = torch.compile(train_model) if compile else train_model
    n_params = count_parameters(model)
    where = f", {layout.strategy} over {layout.world_size} processes" if layout.strategy != "none" else ""
    log.info(f"model: {n_params / 1e6:.2f}M parameters, on {device}{where}")

    def next_batch():
        idx, targets = sampler.next_batch()
        return idx.to(device, non_blocking=True), targets.to(device, non_blocking=True)

    def evaluate() -> float:
        batches = sequential_windows(data_dir, "val", batch_size, model_config.seq_len, eval_tokens)
        return mean_heldout_loss(model, batches, amp_dtype)

    def save(st: TrainState) -> None:
        meta = {"run": run, "state": st.to_dict(), "sampler": sampler.state_dict(), "tokens_seen": st.tokens_seen,
                "step": st.step}
        distributed.save_checkpoint(ckpt, model, optimizer, meta, layout, tokenizer=tokenizer)
        if layout.main:
            write_json_atomic(out / "history.json", st.history)

    settings.flops_per_token = settings.flops_per_token or flops_per_token(model_config)
    t0 = time.perf_counter()
    # a mixture of experts also minimises its router's balance and z losses (llmlab.train.moe_loss)
    loss_fn = moe_lm_loss if model_config.n_expert else lm_loss
    state = train_loop(train_model, optimizer, next_batch, settings, state, evaluate=evaluate, save=save,
                       loss_fn=loss_fn, autocast_dtype=amp_dtype,
                       parallel=distributed.Collectives(layout) if layout.strategy != "none" else None)
    wall = time.perf_counter() - t0
    rows = state.history
    trained = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][-50:]
    return {
        "checkpoint": str(ckpt), "n_params": n_params, "steps": state.step, "tokens_seen": state.tokens_seen,
        "train_wall_s": wall, "tokens_per_s": sum(trained) / len(trained) if trained else 0.0,
        "final_train_loss": rows[-1]["loss"] if rows else None,
        "final_val_loss": next((r["val_loss"] for r in reversed(rows) if "val_loss" in r), None),
        "history": rows, "model": model, "tokenizer": tokenizer, "model_config": model_config,
    }


def check_precision(precision: str, strategy: str) -> None:
    """fp16's gradient scaler works on whole gradients: one process or DDP."""
    if precision == "fp16" and strategy not in ("none", "ddp"):
        raise UserError(f"precision fp16 with strategy {strategy}: its gradient scaler would need FSDP's sharded "
                        "one; use --precision bf16, or strategy ddp")


def _orthogonalise_in(optimizer: torch.optim.Optimizer, amp_dtype: torch.dtype | None) -> None:
    """Muon's Newton-Schulz runs in bf16 when the model trains in bf16: the same fast matmuls."""
    if amp_dtype is torch.bfloat16:
        for group in optimizer.param_groups:
            if group.get("muon"):
                group["ns_dtype"] = "bf16"


def seconds_per_token(model_config: ModelConfig, data_dir: str | Path, batch_size: int, lr: float, *,
                      seed: int = 0, device: torch.device | str = "cpu", optimizer: str = "adamw",
                      precision: str = "auto") -> float:
    """Time a few training steps of a throwaway model like a run's, for sizing a run to a time budget.

    Seconds per trained token: the fastest step after two warm-ups, since other load on the machine only ever
    makes steps slower."""
    device = torch.device(device)
    model = Transformer(model_config).to(device)
    opt = build_optimizer(optimizer, model, lr, device_type=device.type)
    amp_dtype = autocast_dtype(precision, device)
    _orthogonalise_in(opt, amp_dtype)
    amp = autocast(device, amp_dtype)
    sampler = WindowSampler(data_dir, "train", batch_size, model_config.seq_len, seed=seed)
    times = []
    for _ in range(6):
        t0 = time.perf_counter()
        idx, targets = sampler.next_batch()
        with amp:
            loss = lm_loss(model, (idx.to(device), targets.to(device)))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times[2:]) / (batch_size * model_config.seq_len)
