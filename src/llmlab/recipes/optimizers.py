"""`llmlab compare optimizers`: the optimizers lab. One small model, each optimizer, a learning-rate sweep.

    llmlab compare optimizers --out runs/optimizers
    llmlab compare optimizers --optimizers adamw muon --lr-scales 0.5 1 2 --max-steps 400 --data runs/data

Every run trains the same decoder (Llama's shape, from the same seed, on the same windows of the same data:
the default corpus, Python's standard library, tokenised once into <out>/data, or --data) for the same steps
under the same warmup + cosine schedule; only the optimizer and its peak lr change. Each optimizer's grid is
its usual lr (BASE_LR) times --lr-scales, or --lrs for all. Writes report.md, report.json, loss_curves.png
(each optimizer at its best lr), lr_sweep.png (final held-out loss against lr), and the best run's model as
<out>/checkpoint (opens with `llmlab.load(out)`). One seed and a few hundred steps: a lab, not a benchmark.
"""

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from llmlab.common import checkpoint, log
from llmlab.common.config import arg
from llmlab.common.constants import TOKENIZER_FILE
from llmlab.common.device import resolve_device, seed_everything
from llmlab.common.errors import UserError
from llmlab.common.io import atomic_write, write_json_atomic, write_text_atomic
from llmlab.data.loader import WindowSampler, read_manifest, sequential_windows
from llmlab.data.shards import prepared_folder
from llmlab.data.sources import default_corpus, read_documents, sample_documents, split_documents
from llmlab.eval.loss import mean_heldout_loss
from llmlab.models import ModelConfig, Transformer
from llmlab.models.gpt import count_parameters
from llmlab.tokenizer import Tokenizer
from llmlab.train.loop import LoopSettings, TrainState, train_loop
from llmlab.train.optimizers import OPTIMIZERS, build_optimizer

# The centre of each optimizer's sweep, for this lab's small models (the default sweep's best lrs, measured):
# AdamW's is `llmlab pretrain`'s default; Lion moves every coordinate by lr, so it wants less (Chen et al. 2023
# say 3-10x); SGD has no per-coordinate scaling and needs a far larger lr; Muon's update is scaled to AdamW's
# RMS (MUON_SCALES["match_adamw"]) and still takes a few times AdamW's lr.
BASE_LR = {"sgd": 0.3, "adam": 3e-3, "adamw": 3e-3, "lion": 1e-3, "adafactor": 3e-3, "muon": 1e-2}


@dataclass
class OptimizersArgs:
    out: str = arg("runs/compare-optimizers", "output folder: data/, report.md, report.json, PNGs, checkpoint/")
    data: str | None = arg(None, "prepared data folder (llmlab data prepare); default: the corpus, prepared "
                                 "into <out>/data")
    corpus: list[str] = arg([], "text files or folders (default: the Python standard library's sources)")
    max_chars: int = arg(1_500_000, "characters of the corpus to use (tokenising all of it takes long)")
    vocab_size: int = arg(1024, "BPE vocabulary of the tokenizer trained on the corpus")
    optimizers: list[str] = arg(list(BASE_LR), "optimizers to compare", choices=list(OPTIMIZERS))
    lr_scales: list[float] = arg([0.33, 1.0, 3.0], "each optimizer's sweep: its usual lr times these")
    lrs: list[float] = arg([], "explicit peak learning rates for every optimizer (instead of --lr-scales)")
    weight_decay: float = arg(0.1, "decoupled weight decay for the optimizers that decay (matrices only)")
    n_layer: int = arg(2, "blocks")
    n_head: int = arg(4, "attention heads")
    n_embd: int = arg(128, "width")
    seq_len: int = arg(128, "training context length")
    batch_size: int = arg(8, "windows per step")
    max_steps: int = arg(150, "optimizer steps per run (18 runs by default: a few minutes on 2 CPU cores)")
    warmup_steps: int = arg(15, "linear warmup steps")
    eval_tokens: int = arg(16384, "held-out tokens for each run's final loss")
    device: str = arg("auto", "cpu, cuda, cuda:N or auto")
    seed: int = arg(0, "seed for weights and windows (the same for every run)")
    progress: bool = arg(True, "show progress bars")


def _data(args: OptimizersArgs) -> Path:
    """--data, or the corpus tokenised once into <out>/data (reused on later runs); documents drawn from the
    whole corpus, not its sorted head (see sample_documents)."""
    def documents():
        train_docs, val_docs = split_documents(read_documents(args.corpus) if args.corpus else default_corpus())
        return sample_documents(train_docs, args.max_chars), sample_documents(val_docs, args.max_chars // 20)

    return prepared_folder(args.data, Path(args.out) / "data", documents, args.vocab_size, 1_000_000, args.progress)


def _grid(args: OptimizersArgs) -> list[tuple[str, float]]:
    if not args.optimizers:
        raise UserError("--optimizers: name at least one optimizer")
    if any(lr <= 0 for lr in args.lrs) or any(s <= 0 for s in args.lr_scales):
        raise UserError("--lrs and --lr-scales must be positive numbers")
    if not args.lrs and not args.lr_scales:
        raise UserError("give --lr-scales (times each optimizer's usual lr) or --lrs")
    return [(name, lr) for name in args.optimizers
            for lr in (args.lrs or [BASE_LR.get(name, 3e-3) * s for s in args.lr_scales])]


def _train_one(name: str, lr: float, config: ModelConfig, args: OptimizersArgs, data_dir: Path,
               device: torch.device) -> tuple[dict, Transformer]:
    """One run; a non-finite loss ends it (`diverged_at`), not the lab."""
    seed_everything(args.seed)
    model = Transformer(config).to(device)
    optimizer = build_optimizer(name, model, lr, args.weight_decay, device_type=device.type)
    sampler = WindowSampler(data_dir, "train", args.batch_size, args.seq_len, seed=args.seed)
    settings = LoopSettings(max_steps=args.max_steps, lr=lr, warmup_steps=args.warmup_steps, progress=args.progress)
    state, diverged_at = TrainState(), None

    def next_batch():
        idx, targets = sampler.next_batch()
        return idx.to(device), targets.to(device)

    def evaluate() -> float:
        return mean_heldout_loss(model, sequential_windows(data_dir, "val", args.batch_size, args.seq_len,
                                                           args.eval_tokens))

    log.info(f"{name} at lr {lr:.3g}")
    t0 = time.perf_counter()
    try:
        train_loop(model, optimizer, next_batch, settings, state, evaluate=evaluate)
    except UserError as e:  # the loop refuses to go on after a non-finite loss: that is the measurement
        diverged_at = state.step + 1
        log.warn(f"{name} at lr {lr:.3g}: {e}")
    losses = [r["loss"] for r in state.history]
    tail = losses[-max(1, len(losses) // 10):]  # the last tenth: one batch's loss is noisy
    val = state.history[-1].get("val_loss") if state.history and diverged_at is None else None
    row = {"optimizer": name, "lr": lr, "final_val_loss": val if val is not None and math.isfinite(val) else None,
           "final_train_loss": sum(tail) / len(tail) if tail and diverged_at is None else None,
           "diverged_at": diverged_at, "seconds": time.perf_counter() - t0,
           "curve": [(r["step"], r["loss"]) for r in state.history]}
    return row, model.eval()


def run(args: OptimizersArgs) -> dict:
    """Train every (optimizer, lr) of the grid; report the best lr per optimizer and save the best model."""
    out, device = Path(args.out), resolve_device(args.device)
    grid = _grid(args)
    data_dir = _data(args)
    tokenizer = Tokenizer.load(data_dir / read_manifest(data_dir).get("tokenizer", TOKENIZER_FILE))
    config = ModelConfig(vocab_size=tokenizer.vocab_size, seq_len=args.seq_len, n_layer=args.n_layer,
                         n_head=args.n_head, n_embd=args.n_embd, pos="rope", norm="rmsnorm", mlp="swiglu",
                         bias=False, tie_embeddings=True)
    runs, best_model, best_loss = [], None, math.inf
    for name, lr in grid:
        row, model = _train_one(name, lr, config, args, data_dir, device)
        runs.append(row)
        if row["final_val_loss"] is not None and row["final_val_loss"] < best_loss:
            best_model, best_loss = model, row["final_val_loss"]
    best = {}
    for name in args.optimizers:
        done = [r for r in runs if r["optimizer"] == name and r["final_val_loss"] is not None]
        b = min(done, key=lambda r: r["final_val_loss"], default=None)
        best[name] = {"lr": b["lr"], "final_val_loss": b["final_val_loss"],
                      "final_train_loss": b["final_train_loss"]} if b else None
    out.mkdir(parents=True, exist_ok=True)
    _plot_curves(out / "loss_curves.png", runs, best)
    _plot_sweep(out / "lr_sweep.png", runs, args.optimizers)
    summary = {"best": best, "runs": runs, "n_params": count_parameters(Transformer(config)),
               "model": config.to_dict(), "args": dataclasses.asdict(args)}
    if best_model is not None:
        winner = min((n for n in best if best[n]), key=lambda n: best[n]["final_val_loss"])
        checkpoint.save_checkpoint(out / "checkpoint", best_model, {"run": dataclasses.asdict(args),
                                   "optimizer": winner, "lr": best[winner]["lr"]}, tokenizer=tokenizer)
        summary["checkpoint"] = str(out / "checkpoint")
    write_json_atomic(out / "report.json", summary)
    write_text_atomic(out / "report.md", _report(summary, args))
    log.info(f"report in {out / 'report.md'}")
    return summary


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _report(summary: dict, args: OptimizersArgs) -> str:
    tokens = args.batch_size * args.seq_len
    lines = ["# Optimizers", "",
             f"A {summary['n_params'] / 1e6:.2f}M-parameter decoder ({args.n_layer} layers, width {args.n_embd}, "
             f"Llama's shape), {args.max_steps} steps of {tokens} tokens, warmup {args.warmup_steps} then cosine "
             f"to 10%, gradient clipping at 1.0, weight decay {args.weight_decay} where the optimizer decays. "
             f"Final loss: held-out nats per token over {args.eval_tokens} tokens after the last step.", "",
             "| optimizer | best lr | final val loss | final train loss (last 10%) |", "|---|---|---|---|"]
    for name, b in summary["best"].items():
        lines.append(f"| {name} | {b['lr']:.3g} | {b['final_val_loss']:.3f} | {_fmt(b['final_train_loss'])} |"
                     if b else f"| {name} | - | diverged at every lr | - |")
    lines += ["", "Every run (final held-out loss; `diverged` when the loss stopped being finite):", "",
              "| optimizer | lr | final val loss | seconds |", "|---|---|---|---|"]
    for r in summary["runs"]:
        loss = _fmt(r["final_val_loss"]) if r["diverged_at"] is None else f"diverged at step {r['diverged_at']}"
        lines.append(f"| {r['optimizer']} | {r['lr']:.3g} | {loss} | {r['seconds']:.1f} |")
    lines += ["", "![loss curves](loss_curves.png)", "", "![final loss against lr](lr_sweep.png)", "",
              "A best lr at the edge of its grid means the optimum may lie beyond it: widen --lr-scales. "
              "Muon orthogonalises each hidden matrix's update (Newton-Schulz); its embeddings, norms and tied "
              "head take AdamW steps. Adafactor keeps no first moment here and factors its second moments.", ""]
    return "\n".join(lines)


def _smooth(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    _pyplot().close(fig)


def _plot_curves(path: Path, runs: list[dict], best: dict) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, b in best.items():
        if b is None:
            continue
        r = next(r for r in runs if r["optimizer"] == name and r["lr"] == b["lr"])
        steps, losses = zip(*r["curve"], strict=True)
        ax.plot(steps, _smooth(list(losses), max(1, len(losses) // 20)), label=f"{name}, lr {b['lr']:.2g}",
                linewidth=1)
    ax.set(xlabel="step", ylabel="train loss (nats/token, moving average)", title="each optimizer at its best lr")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def _plot_sweep(path: Path, runs: list[dict], names: list[str]) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in names:
        points = [(r["lr"], r["final_val_loss"]) for r in runs if r["optimizer"] == name]
        ax.plot([p[0] for p in points], [p[1] if p[1] is not None else float("nan") for p in points], "o-",
                label=name, linewidth=1)
    ax.set(xscale="log", xlabel="peak learning rate", ylabel="final held-out loss (nats/token)",
           title="final loss against learning rate (gaps: diverged)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _save(fig, path)
