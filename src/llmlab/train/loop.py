"""The training loop: accumulate, clip, step, schedule, evaluate, checkpoint, report.

It knows nothing about text or files: batches come from `next_batch`, the
loss from `loss_fn`, and saving is a callback, so pretraining and fine-tuning
share it. What it guarantees: a non-finite loss stops the run (or, opt-in, is
skipped up to a cap) before anything is saved, and a run resumed from a
checkpoint continues exactly as the uninterrupted run would have. On several
processes it meets the others only through a `Parallelism` (the default is one
process; `llmlab.train.distributed.Collectives` is the real one).
"""

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from llmlab.common.errors import UserError
from llmlab.train.objectives import lm_loss
from llmlab.train.optim import lr_at

# Dense bf16 peak FLOP/s by GPU name, for MFU (as nanoGPT estimates it against the A100's 312 TFLOP/s).
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "4090": 165e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None  # CPUs have no single honest figure; MFU is reported on GPUs only
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


# --precision: the dtype matmuls run in under autocast (weights, gradients and optimizer state stay float32).
# "auto" is bf16 on CUDA and float32 on CPU: bf16 is 3-4x faster on CPUs with bf16 matmul units (AVX512-BF16,
# AMX) and slower on the others, so only a measurement can choose it there (the speedrun measures). fp16 (older
# GPUs) trains with a gradient scaler, since its narrow range lets small gradients underflow to zero.
PRECISIONS = {"auto": None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision not in PRECISIONS:
        raise UserError(f"precision: unknown {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return PRECISIONS[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """torch.autocast to `dtype` on `device`, or nothing when the dtype is None (float32)."""
    return torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()


@dataclass
class LoopSettings:
    max_steps: int
    lr: float
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    grad_accum: int = 1
    grad_clip: float = 1.0
    eval_interval: int = 0  # 0: evaluate only at the end
    ckpt_interval: int = 0  # 0: checkpoint only at the end
    max_seconds: float | None = None
    stop_at: int | None = None  # stop (and checkpoint) after this step, keeping max_steps' schedule
    schedule_by_time: bool = False  # decay over max_seconds instead of max_steps (not bit-reproducible)
    skip_bad_steps: int = 0  # how many non-finite steps may be skipped before stopping; 0 stops at the first
    flops_per_token: float | None = None
    progress: bool = True
    show: tuple[str, ...] = ()  # more keys of the loss_fn's per-step metrics for the progress bar


class Parallelism:
    """Where the loop meets other processes; this default is a single process.

    Every process runs the same loop. They must agree on every decision (skip a step, stop, evaluate, save),
    so the loss that decides is averaged over processes and the clock that decides is rank 0's.
    """

    world_size = 1  # processes in the run
    data_parallel = 1  # of them, how many train on their own rows of the batch
    main = True  # the process that shows progress

    def accumulate(self, model: torch.nn.Module) -> AbstractContextManager:
        """Around the forward and backward of each micro-batch but the last (DDP's `no_sync`)."""
        return nullcontext()

    def mean(self, value: float) -> float:
        return value

    def agree(self, value: float) -> float:
        """Rank 0's value, on every process."""
        return value

    def clip_grad_norm(self, params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


@dataclass
class TrainState:
    step: int = 0
    tokens_seen: int = 0
    elapsed_s: float = 0.0
    bad_steps: int = 0
    history: list[dict] = field(default_factory=list)  # one row per logged step: step, loss, lr, val_loss?
    grad_scaler: dict | None = None  # fp16 only: the gradient scaler's scale and growth count, for exact resume

    def to_dict(self) -> dict:
        return dict(step=self.step, tokens_seen=self.tokens_seen, elapsed_s=self.elapsed_s,
                    bad_steps=self.bad_steps, history=self.history, grad_scaler=self.grad_scaler)


def train_loop(model: torch.nn.Module, optimizer: torch.optim.Optimizer, next_batch: Callable[[], tuple],
               settings: LoopSettings, state: TrainState, *, evaluate: Callable[[], float] | None = None,
               save: Callable[[TrainState], None] | None = None, loss_fn: Callable = lm_loss,
               autocast_dtype: torch.dtype | None = None, parallel: Parallelism | None = None) -> TrainState:
    """Run from state.step to settings.max_steps; returns the final state (also passed to `save`)."""
    parallel = parallel or Parallelism()
    device = next(model.parameters()).device
    params = [p for g in optimizer.param_groups for p in g["params"]]
    amp = autocast(device, autocast_dtype)
    # fp16: the loss is scaled up before backward and the gradients back down before clipping; a step whose
    # gradients overflowed is skipped by the scaler, which then halves the scale (and doubles it after 2000 good steps)
    scaler = torch.amp.GradScaler(device.type) if autocast_dtype is torch.float16 else None
    if scaler is not None and state.grad_scaler:
        scaler.load_state_dict(state.grad_scaler)
    peak = peak_flops(device)
    start_time, start_elapsed = time.perf_counter(), state.elapsed_s
    by_time = settings.schedule_by_time and settings.max_seconds
    # a run on a time budget counts seconds, since its step count is only a cap
    bar = tqdm(total=round(settings.max_seconds) if by_time else settings.max_steps,
               initial=round(start_elapsed) if by_time else state.step, unit="s" if by_time else "step",
               disable=not (settings.progress and parallel.main), dynamic_ncols=True)
    model.train()
    while state.step < settings.max_steps:
        t0 = time.perf_counter()
        progress = None
        if by_time:
            progress = parallel.agree(start_elapsed + time.perf_counter() - start_time) / settings.max_seconds
        lr = lr_at(state.step, settings.max_steps, settings.lr, settings.warmup_steps, settings.min_lr_ratio,
                   progress)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum, n_tokens, metrics = 0.0, 0, {}
        for micro in range(settings.grad_accum):
            batch = next_batch()
            # gradients meet across processes once per step, after the last micro-batch
            with parallel.accumulate(model) if micro < settings.grad_accum - 1 else nullcontext():
                with amp:
                    out = loss_fn(model, batch)
                # a loss_fn may also return {name: number} to log per step (DPO's rewards/margins), averaged
                loss, extra = out if isinstance(out, tuple) else (out, {})
                loss = loss / settings.grad_accum
                (scaler.scale(loss) if scaler is not None else loss).backward()
            loss_sum += loss.item()
            n_tokens += batch[0].numel() * parallel.data_parallel
            for k, v in extra.items():
                metrics[k] = metrics.get(k, 0.0) + float(v) / settings.grad_accum
        loss_sum = parallel.mean(loss_sum)
        if not math.isfinite(loss_sum):
            optimizer.zero_grad(set_to_none=True)
            state.bad_steps += 1
            if state.bad_steps > settings.skip_bad_steps:
                bar.close()
                raise UserError(f"step {state.step}: the loss is {loss_sum} (not finite); stopped without saving, "
                                "the last good checkpoint is untouched; lower --lr or allow --skip-bad-steps N")
            state.step += 1
            continue
        if scaler is not None:
            scaler.unscale_(optimizer)
        grad_norm = parallel.clip_grad_norm(params, settings.grad_clip) if settings.grad_clip > 0 else None
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
            state.grad_scaler = scaler.state_dict()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        state.step += 1
        state.tokens_seen += n_tokens
        state.elapsed_s = parallel.agree(start_elapsed + time.perf_counter() - start_time)
        row = {"step": state.step, "loss": loss_sum, "lr": lr, "tokens_per_s": n_tokens / dt,
               "grad_norm": float(grad_norm) if grad_norm is not None and grad_norm.isfinite() else None, **metrics}
        if settings.flops_per_token and peak:
            row["mfu"] = settings.flops_per_token * n_tokens / dt / (peak * parallel.world_size)
        last = state.step == settings.max_steps
        stop_now = (settings.max_seconds is not None and state.elapsed_s >= settings.max_seconds) or (
            settings.stop_at is not None and state.step >= settings.stop_at)
        if evaluate is not None and (last or stop_now or (settings.eval_interval
                                                         and state.step % settings.eval_interval == 0)):
            row["val_loss"] = evaluate()
            model.train()
        state.history.append(row)
        bar.update(min(round(state.elapsed_s), bar.total) - bar.n if by_time else 1)
        bar.set_postfix({k: f"{row[k]:.3g}" for k in ("loss", "val_loss", "tokens_per_s", "mfu", *settings.show)
                         if k in row})
        if save is not None and (last or stop_now or (settings.ckpt_interval
                                                     and state.step % settings.ckpt_interval == 0)):
            save(state)
        if stop_now:
            break
    bar.close()
    return state
