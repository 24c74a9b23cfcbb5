"""`llmlab compare diloco`: DiLoCo against data-parallel training at equal compute, by loss and by bytes sent.

    llmlab compare diloco --out runs/diloco
    llmlab compare diloco --inner-steps 10 50 100 --max-steps 600 --data runs/speedrun/data

Each run is --workers processes on this machine (gloo on CPU, NCCL with a GPU per worker), launched by
`llmlab.train.spawn`, each with its own stream of training windows, the same per-worker batch and the same
number of steps, so every run spends the same compute:

- `ddp`: PyTorch's DistributedDataParallel, the gradients all-reduced every step;
- `diloco-H<H>`: DiLoCo with H inner AdamW steps per round (`llmlab.train.diloco`), one all-reduce of the
  pseudo-gradients per round; and the largest H again with int8 pseudo-gradients (--int8).

Data: the speedrun's (Python's standard library, a 4096-token BPE, prepared once into <out>/data), or --data.
Writes report.md, report.json, diloco.png (held-out loss against steps and against bytes sent per worker),
and <out>/checkpoint: the global model of the DiLoCo run with the lowest final held-out loss, which
`llmlab.load(out)` opens. The default budget (3 runs of 2 workers, 200 steps) takes a few minutes on 2 cores.
"""

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from llmlab.common import checkpoint, log
from llmlab.common.config import arg
from llmlab.common.errors import UserError
from llmlab.common.io import atomic_write, write_json_atomic, write_text_atomic
from llmlab.data.loader import read_manifest
from llmlab.data.shards import prepared_folder
from llmlab.data.sources import default_corpus, split_documents
from llmlab.models import Transformer, get_preset
from llmlab.models.config import PRESETS
from llmlab.models.gpt import count_parameters
from llmlab.tokenizer import Tokenizer
from llmlab.train.collectives import COMPRESSIONS
from llmlab.train.diloco import RunSpec, train_worker
from llmlab.train.spawn import spawn


@dataclass
class DiLoCoArgs:
    out: str = arg("runs/diloco", "output folder: data/, report.md, report.json, diloco.png, checkpoint/")
    data: str | None = arg(None, "prepared shards (llmlab data prepare); default: the speedrun's corpus, "
                                 "prepared into <out>/data")
    vocab_size: int = arg(4096, "tokenizer vocabulary when preparing the default corpus (the speedrun's)")
    preset: str = arg("llama-tiny", "model preset", choices=sorted(PRESETS))
    seq_len: int = arg(64, "context length (short, so the default runs fit a few minutes on 2 CPU cores)")
    workers: int = arg(2, "K: worker processes, for DDP and DiLoCo alike")
    batch_size: int = arg(4, "sequences per worker per step")
    max_steps: int = arg(200, "steps per worker in every run (equal compute)")
    inner_steps: list[int] = arg([10, 50], "DiLoCo's H values: inner steps between synchronisations")
    int8: str = arg("int8-row", "run the largest H once more with pseudo-gradients sent as int8-row or "
                                "int8-tensor through the hand ring; none to skip", choices=list(COMPRESSIONS))
    lr: float = arg(3e-3, "peak AdamW learning rate (DDP, and DiLoCo's inner steps)")
    warmup_steps: int = arg(20, "linear warmup steps before the cosine decay")
    outer_lr: float = arg(0.7, "DiLoCo's outer Nesterov SGD learning rate (the paper's)")
    outer_momentum: float = arg(0.9, "DiLoCo's outer Nesterov momentum (the paper's)")
    eval_interval: int = arg(50, "held-out loss every N steps (a multiple of H sees freshly averaged weights)")
    eval_tokens: int = arg(8192, "held-out tokens per evaluation")
    seed: int = arg(1337, "seed for the initial weights (the same in every run) and the windows")
    timeout_minutes: float = arg(30.0, "stop (and kill the workers of) a run that takes longer than this")
    progress: bool = arg(True, "show progress bars")


def _data(args: DiLoCoArgs) -> Path:
    """--data, or the speedrun's default corpus tokenised once into <out>/data (reused by later runs)."""
    return prepared_folder(args.data, Path(args.out) / "data", lambda: split_documents(default_corpus()),
                           args.vocab_size, 4_000_000, args.progress)


def _check(args: DiLoCoArgs) -> None:
    if args.workers < 1 or args.batch_size < 1 or args.max_steps < 1:
        raise UserError("--workers, --batch-size and --max-steps must each be at least 1")
    if not args.inner_steps or min(args.inner_steps) < 1:
        raise UserError(f"--inner-steps {args.inner_steps}: give one or more H values of at least 1")
    if max(args.inner_steps) > args.max_steps:
        raise UserError(f"--inner-steps {max(args.inner_steps)} is more than --max-steps {args.max_steps}: "
                        "that run would synchronise only once, at the end; lower H or raise --max-steps")
    if args.eval_interval < 1:
        raise UserError(f"--eval-interval {args.eval_interval}: must be at least 1")


def _runs(args: DiLoCoArgs) -> list[tuple[str, dict]]:
    runs = [("ddp", {"mode": "ddp"})]
    runs += [(f"diloco-H{h}", {"mode": "diloco", "inner_steps": h}) for h in args.inner_steps]
    if args.int8 != "none":
        h = max(args.inner_steps)
        runs.append((f"diloco-H{h}-{args.int8}", {"mode": "diloco", "inner_steps": h, "compress": args.int8}))
    return runs


def _summarise(name: str, per_rank: list[dict], spec: RunSpec, wall: float) -> dict:
    """Mean train loss over workers per step, rank 0's held-out points, bytes per worker."""
    steps = len(per_rank[0]["history"])
    train = [sum(r["history"][i]["loss"] for r in per_rank) / len(per_rank) for i in range(steps)]
    evals = [{"step": row["step"], "val_loss": row["val_loss"], "bytes": row["bytes"]}
             for row in per_rank[0]["history"] if "val_loss" in row]
    tail = train[-max(1, steps // 10):]
    return {"name": name, "mode": spec.mode, "inner_steps": spec.inner_steps if spec.mode == "diloco" else 1,
            "compress": spec.compress, "steps": steps, "train_loss": train, "evals": evals,
            "final_val_loss": evals[-1]["val_loss"], "final_train_loss": sum(tail) / len(tail),
            "bytes_per_worker": per_rank[0]["bytes_sent"],
            "syncs": -(-steps // spec.inner_steps) if spec.mode == "diloco" else steps, "wall_s": wall}


def _plot(runs: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    fig, (ax_steps, ax_bytes) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, r in enumerate(runs):
        color = f"C{i}"
        k = max(1, len(r["train_loss"]) // 20)  # a moving mean of the noisy per-step losses
        smooth = [sum(r["train_loss"][max(0, j - k + 1):j + 1]) / len(r["train_loss"][max(0, j - k + 1):j + 1])
                  for j in range(len(r["train_loss"]))]
        ax_steps.plot(range(1, len(smooth) + 1), smooth, color=color, alpha=0.35, linewidth=1)
        ax_steps.plot([e["step"] for e in r["evals"]], [e["val_loss"] for e in r["evals"]], "o-", color=color,
                      label=r["name"])
        ax_bytes.plot([max(e["bytes"], 1) for e in r["evals"]], [e["val_loss"] for e in r["evals"]], "o-",
                      color=color, label=r["name"])
    ax_steps.set_xlabel("step (per worker; faint: train loss, dots: held-out loss of the global model)")
    ax_bytes.set_xlabel("bytes sent per worker (log scale)")
    ax_bytes.set_xscale("log")
    for ax in (ax_steps, ax_bytes):
        ax.set_ylabel("loss (nats per token)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _markdown(report: dict) -> str:
    ddp = next(r for r in report["runs"] if r["mode"] == "ddp")
    cfg = report["config"]
    lines = [
        "# DiLoCo against DDP", "",
        f"{cfg['workers']} workers, each {cfg['max_steps']} steps of {cfg['batch_size']} x {cfg['seq_len']} "
        f"tokens in every run (equal compute); {report['n_params']:,} parameters ({cfg['preset']}). Bytes are "
        "what one worker sends (ring all-reduce: 2(p-1)/p of the tensor); DDP's are its gradient buckets.", "",
        "| run | H | payload | all-reduces of the model | bytes per worker | DDP's bytes / run's | "
        "final held-out loss | train loss (last 10%) | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        ratio = ddp["bytes_per_worker"] / r["bytes_per_worker"] if r["bytes_per_worker"] else float("inf")
        payload = "float32 gradients" if r["mode"] == "ddp" else (
            "float32 pseudo-gradients" if r["compress"] == "none" else f"{r['compress']} pseudo-gradients")
        lines.append(f"| {r['name']} | {r['inner_steps']} | {payload} | {r['syncs']} | {_mb(r['bytes_per_worker'])} "
                     f"| {ratio:,.1f}x | {r['final_val_loss']:.4f} | {r['final_train_loss']:.4f} | "
                     f"{r['wall_s']:.0f} |")
    best = report["best_diloco"]
    lines += ["", "![held-out loss against steps and against bytes](diloco.png)", "",
              f"`checkpoint/` holds the global model of {best} (the DiLoCo run with the lowest final held-out "
              "loss); `llmlab.load` opens this folder.", "",
              "One seed and a few hundred steps on a tiny model: differences of a few hundredths of a nat are "
              "within run-to-run noise.", "",
              "## Run configuration", "", "```json", json.dumps(cfg, indent=2), "```", ""]
    return "\n".join(lines)


def run(args: DiLoCoArgs) -> dict:
    t_start = time.perf_counter()
    _check(args)
    out = Path(args.out)
    data_dir = _data(args)
    manifest = read_manifest(data_dir)
    model_config = get_preset(args.preset, vocab_size=manifest["vocab_size"], seq_len=args.seq_len)
    tokenizer = Tokenizer.load(data_dir / manifest["tokenizer"])
    results, best = [], None
    for name, extra in _runs(args):
        spec = RunSpec(model_config=model_config, data_dir=str(data_dir), max_steps=args.max_steps,
                       batch_size=args.batch_size, lr=args.lr, outer_lr=args.outer_lr,
                       outer_momentum=args.outer_momentum, warmup_steps=min(args.warmup_steps, args.max_steps // 2),
                       eval_interval=args.eval_interval, eval_tokens=args.eval_tokens, seed=args.seed,
                       progress=args.progress, label=name, **extra)
        log.info(f"{name}: {args.workers} workers x {args.max_steps} steps")
        t0 = time.perf_counter()
        per_rank = spawn(train_worker, args.workers, spec, timeout=args.timeout_minutes * 60)
        summary = _summarise(name, per_rank, spec, time.perf_counter() - t0)
        log.info(f"{name}: held-out loss {summary['final_val_loss']:.4f}, "
                 f"{_mb(summary['bytes_per_worker'])} sent per worker")
        results.append(summary)
        if spec.mode == "diloco" and (best is None or summary["final_val_loss"] < best[0]["final_val_loss"]):
            best = (summary, per_rank[0]["weights"])
    model = Transformer(model_config)
    model.load_state_dict(best[1], strict=False)  # a tied head is stored once, as the embedding
    meta = {"run": {"compare_diloco": dataclasses.asdict(args), "chosen_run": best[0]["name"]},
            "step": args.max_steps, "history": [{"step": e["step"], "val_loss": e["val_loss"]}
                                                for e in best[0]["evals"]]}
    checkpoint.save_checkpoint(out / "checkpoint", model, meta, tokenizer=tokenizer)
    report = {"runs": results, "best_diloco": best[0]["name"], "n_params": count_parameters(model),
              "wall_s": time.perf_counter() - t_start, "config": dataclasses.asdict(args)}
    _plot(results, out / "diloco.png", f"DiLoCo vs DDP: {args.workers} workers, {args.preset}, equal compute")
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", _markdown(report))
    log.info(f"report in {out / 'report.md'}")
    return report
