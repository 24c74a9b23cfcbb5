"""`llmlab pretrain`: train a decoder on prepared shards.

    llmlab pretrain --data runs/data --out runs/pretrain --preset llama-small --max-steps 2000
    llmlab pretrain --nproc 2 --strategy ddp ...        (runs the next line for you)
    torchrun --standalone --nproc_per_node 2 -m llmlab pretrain --strategy ddp ...

Writes `<out>/checkpoint` (reopens with `llmlab.load(out)`), `<out>/run_config.json` and
`<out>/history.json`. The training itself is `llmlab.train.pretrain`'s; several processes are
`llmlab.train.distributed`'s (`--batch-size` is then per data-parallel process).
"""

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from llmlab.common import checkpoint, log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device
from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic
from llmlab.data.loader import read_manifest
from llmlab.models import get_preset
from llmlab.models.config import PRESETS
from llmlab.train import distributed
from llmlab.train.loop import PRECISIONS, LoopSettings
from llmlab.train.optimizers import OPTIMIZERS
from llmlab.train.pretrain import check_precision, pretrain


@dataclass
class PretrainArgs:
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
    optimizer: str = arg("adamw", "optimizer (llmlab.train.optimizers; `llmlab compare optimizers` sweeps them)",
                         choices=list(OPTIMIZERS))
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
    precision: str = arg("auto", "autocast dtype of the matmuls (weights stay float32): auto is bf16 on CUDA and "
                                 "float32 on CPU; bf16 trains 1.4-1.8x faster on CPUs with bf16 matmul units "
                                 "(AVX512-BF16, AMX) and slower on others; fp16 trains with a gradient scaler",
                         choices=list(PRECISIONS))
    compile: bool = arg(False, "torch.compile the model")
    seed: int = arg(1337, "seed for weights, sampling and dropout")
    resume: bool = arg(False, "continue from <out>/checkpoint exactly where it stopped")
    skip_bad_steps: int = arg(0, "skip up to N steps whose loss is not finite (default: stop at the first)")
    progress: bool = arg(True, "show a progress bar")
    strategy: str = arg("none", "how several processes share the training: ddp, fsdp, tp or fsdp+tp "
                        "(llmlab.train.distributed)", choices=list(distributed.STRATEGIES))
    nproc: int = arg(1, "processes on this machine; with a --strategy, runs torchrun with this many")
    tp_size: int | None = arg(None, "tensor-parallel degree (default: all processes for tp, 2 for fsdp+tp)")
    mixed_precision: str = arg("none", "FSDP's policy: bf16 computes in bfloat16 on float32 master weights",
                               choices=list(distributed.MIXED_PRECISION))


# Settings that must not change across a resume (max_steps and max_minutes may, to extend a run). The global
# batch (--batch-size times the data-parallel processes) may not either, but the processes and strategy may.
RESUME_KEYS = ("preset", "seq_len", "dropout", "global_batch", "grad_accum", "lr", "min_lr_ratio", "warmup_steps",
               "optimizer", "weight_decay", "grad_clip", "seed", "precision")


def loop_settings(args: PretrainArgs) -> LoopSettings:
    return LoopSettings(max_steps=args.max_steps, lr=args.lr, warmup_steps=args.warmup_steps,
                        min_lr_ratio=args.min_lr_ratio, grad_accum=args.grad_accum, grad_clip=args.grad_clip,
                        eval_interval=args.eval_interval, ckpt_interval=args.ckpt_interval,
                        max_seconds=args.max_minutes * 60 if args.max_minutes else None, stop_at=args.stop_at,
                        schedule_by_time=args.schedule_by_time, skip_bad_steps=args.skip_bad_steps,
                        progress=args.progress)


def run(args: PretrainArgs) -> dict:
    """Train per `args`; returns a summary (n_params, tokens_seen, tokens_per_s, final losses, paths).

    With a `strategy` outside torchrun, runs torchrun with `nproc` processes instead and returns the
    checkpoint's path; a failed torchrun raises SystemExit with its exit status.
    """
    device = resolve_device(args.device)
    launching = args.strategy != "none" and not distributed.under_torchrun()
    if distributed.process_rank():
        log.set_quiet(True)  # rank 0 speaks for all
    ckpt = Path(args.out) / "checkpoint"
    if args.resume and not checkpoint.is_checkpoint(ckpt):
        raise UserError(f"--resume {ckpt}: no such checkpoint; drop --resume to start a new run")
    if not args.resume and checkpoint.is_checkpoint(ckpt):
        raise UserError(f"{ckpt} already exists; pass --resume to continue it or choose a new --out")
    overrides = {"vocab_size": read_manifest(args.data)["vocab_size"], "dropout": args.dropout}
    if args.seq_len:
        overrides["seq_len"] = args.seq_len
    model_config = get_preset(args.preset, **overrides)
    world = int(os.environ["WORLD_SIZE"]) if distributed.under_torchrun() else args.nproc
    if args.nproc < 1:
        raise UserError(f"--nproc {args.nproc}: give at least 1")
    distributed.check_strategy(args.strategy, model_config, world, args.tp_size, args.mixed_precision)
    check_precision(args.precision, args.strategy)
    if launching:  # refused above or here, before any process starts, rather than once per process
        status = distributed.launch(["pretrain", *as_argv(args)], args.nproc)
        if status:
            raise SystemExit(status)
        return {"checkpoint": str(ckpt), "processes": args.nproc}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if not distributed.process_rank():
        write_json_atomic(Path(args.out) / "run_config.json",
                          {"pretrain": dataclasses.asdict(args), "model": model_config.to_dict()})
    with distributed.process_group(device):
        summary = pretrain(model_config, args.data, args.out, loop_settings(args), batch_size=args.batch_size,
                           weight_decay=args.weight_decay, seed=args.seed, device=device,
                           compile=args.compile, eval_tokens=args.eval_tokens, resume=args.resume,
                           run=dataclasses.asdict(args), resume_keys=RESUME_KEYS, optimizer_name=args.optimizer,
                           strategy=args.strategy, tp_size=args.tp_size, mixed_precision=args.mixed_precision,
                           precision=args.precision)
    log.info(f"done: {summary['steps']} steps, {summary['tokens_seen']:,} tokens, "
             f"val loss {summary['final_val_loss']:.4f}; checkpoint in {summary['checkpoint']}")
    return summary


def as_argv(args: PretrainArgs) -> list[str]:
    """The flags that give `args` again, the ones left at their defaults omitted: what torchrun's processes
    get. `--nproc` is dropped; under torchrun the process count is torchrun's."""
    argv = []
    for f in dataclasses.fields(args):
        value = getattr(args, f.name)
        if f.name == "nproc" or value == f.default or value is None:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, str(value)]
    return argv
