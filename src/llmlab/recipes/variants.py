"""The labs' architecture comparisons, and attention maps of any model.

    llmlab compare norms --out runs/norms            # Pre-LN vs Post-LN, with and without warmup
    llmlab compare positions --out runs/positions    # learned, sinusoidal, RoPE, ALiBi, none: bpb at L and 2L
    llmlab compare moe --out runs/moe                # MoE vs dense at equal active and equal total parameters
    llmlab attention-maps --model smollm2-135m-instruct --prompt "The cat sat on the mat." --out runs/attn

Each comparison trains small decoders on the same windows of the same data (the default corpus, Python's
standard library, tokenised once into <out>/data; or --data, a folder from `llmlab data prepare`), from the
same seed for the same steps; the models differ only in the `ModelConfig` fields under test. Each writes
report.md, summary.json and PNGs to --out. Numbers are from one seed: small differences are noise.
"""

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from llmlab.common import log
from llmlab.common.config import arg
from llmlab.common.constants import TOKENIZER_FILE
from llmlab.common.device import resolve_device, seed_everything
from llmlab.common.errors import UserError
from llmlab.common.io import atomic_write, write_json_atomic, write_text_atomic
from llmlab.data.loader import WindowSampler, read_manifest, sequential_windows
from llmlab.data.shards import prepared_folder
from llmlab.data.sources import default_corpus, read_documents, sample_documents, split_documents
from llmlab.eval.bpb import model_bpb
from llmlab.eval.loss import loss_by_position, mean_heldout_loss
from llmlab.models import ModelConfig, Transformer
from llmlab.models.attention_maps import attention_maps, plot_attention_maps
from llmlab.models.config import POSITIONS
from llmlab.models.gpt import count_parameters
from llmlab.tokenizer import Tokenizer
from llmlab.train.loop import LoopSettings, TrainState, train_loop
from llmlab.train.moe_loss import moe_lm_loss
from llmlab.train.objectives import lm_loss
from llmlab.train.optim import make_adamw


@dataclass
class CompareArgs:
    out: str = arg("runs/compare", "output folder: data/, report.md, summary.json, PNGs")
    data: str | None = arg(None, "prepared data folder (llmlab data prepare); default: the corpus, prepared "
                                 "into <out>/data")
    corpus: list[str] = arg([], "text files or folders (default: the Python standard library's sources)")
    max_chars: int = arg(3_000_000, "characters of the corpus to use (tokenising all of it takes long)")
    vocab_size: int = arg(2048, "BPE vocabulary of the tokenizer trained on the corpus")
    n_layer: int = arg(4, "blocks")
    n_head: int = arg(4, "attention heads")
    n_embd: int = arg(128, "width")
    seq_len: int = arg(128, "training context length L")
    batch_size: int = arg(8, "windows per step (small: more updates from the few tokens a CPU sees in minutes)")
    max_steps: int = arg(200, "optimizer steps per model")
    lr: float = arg(3e-3, "peak learning rate")
    warmup_steps: int = arg(30, "linear warmup steps")
    eval_interval: int = arg(50, "steps between validation losses")
    eval_tokens: int = arg(32768, "validation tokens per periodic evaluation")
    device: str = arg("auto", "cpu, cuda, cuda:N or auto")
    seed: int = arg(0, "seed for weights and windows (the same for every model)")
    progress: bool = arg(True, "show progress bars")


@dataclass
class NormsArgs(CompareArgs):
    out: str = arg("runs/compare-norms", "output folder: data/, report.md, summary.json, PNGs")
    n_layer: int = arg(6, "blocks (Post-LN's trouble grows with depth)")
    lr: float = arg(6e-3, "peak learning rate (high enough that warmup matters)")


@dataclass
class PositionsArgs(CompareArgs):
    out: str = arg("runs/compare-positions", "output folder: data/, report.md, summary.json, PNGs")
    positions: list[str] = arg(list(POSITIONS), "position schemes to train", choices=list(POSITIONS))


@dataclass
class MoEArgs(CompareArgs):
    out: str = arg("runs/compare-moe", "output folder: data/, report.md, summary.json, PNGs")
    n_expert: int = arg(8, "experts per MoE layer")
    expert_top_k: int = arg(2, "experts per token")
    expert_size: int = arg(128, "hidden width of one expert (the dense models get top_k or n_expert times it)")
    capacity_factor: float | None = arg(None, "drop assignments over factor * tokens * k / n_expert per expert "
                                              "(default: never drop)")
    aux_loss_coef: float = arg(0.01, "load-balancing loss weight")
    z_loss_coef: float = arg(0.001, "router z-loss weight")


@dataclass
class AttentionMapArgs:
    model: str = arg("smollm2-135m-instruct", "any model llmlab.load opens (alias, folder, .gguf, hub id)")
    prompt: str = arg("The cat sat on the mat because it was tired.", "text whose attention to draw")
    target: str | None = arg(None, "encoder-decoder models only: the decoder's text (its cross-attention is drawn)")
    out: str = arg("runs/attention-maps", "output folder: attention.png, maps.json")
    layers: list[int] = arg([], "attention modules to draw, by index (default: all)")
    device: str = arg("cpu", "cpu, cuda, cuda:N or auto")


@dataclass
class Run:
    """One trained model of a comparison: what it was, how its losses went, what it measured."""
    name: str
    config: ModelConfig
    history: list[dict] = field(default_factory=list)
    diverged_at: int | None = None
    n_params: int = 0
    seconds: float = 0.0
    model: Any = None
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        last = self.history[-1] if self.history else {}
        val = [r["val_loss"] for r in self.history if "val_loss" in r]
        return {"name": self.name, "n_params": self.n_params, "steps": len(self.history),
                "diverged_at": self.diverged_at, "final_loss": last.get("ce", last.get("loss")),
                "final_val_loss": val[-1] if val else None, "seconds": self.seconds, **self.extra,
                "config": self.config.to_dict()}


def _data(args: CompareArgs) -> Path:
    """--data, or the corpus tokenised once into <out>/data (reused on later runs)."""
    def documents():
        train_docs, val_docs = split_documents(read_documents(args.corpus) if args.corpus else default_corpus())
        # documents drawn from the whole corpus, not its sorted head (see sample_documents)
        return sample_documents(train_docs, args.max_chars), sample_documents(val_docs, args.max_chars // 20)

    return prepared_folder(args.data, Path(args.out) / "data", documents, args.vocab_size, 1_000_000, args.progress)


def _base(args: CompareArgs, vocab_size: int, **fields: Any) -> ModelConfig:
    """Llama's shape (RoPE, RMSNorm, SwiGLU, no biases) at the comparison's size, with `fields` changed."""
    return ModelConfig(**{**dict(vocab_size=vocab_size, seq_len=args.seq_len, n_layer=args.n_layer,
                                 n_head=args.n_head, n_embd=args.n_embd, pos="rope", norm="rmsnorm", mlp="swiglu",
                                 bias=False), **fields})


class GradNorms:
    """Each block's gradient norm per optimizer step, measured before clipping.

    Hooks sum each parameter's squared gradient into its block's slot as backward produces it; the optimizer's
    step pre-hook closes the step (one row per step, aligned with the loop's history).
    """

    def __init__(self, model: Transformer, optimizer: torch.optim.Optimizer):
        self.rows: list[list[float]] = []
        self.sums = [0.0] * len(model.blocks)
        for i, block in enumerate(model.blocks):
            for p in block.parameters():
                p.register_post_accumulate_grad_hook(lambda p, i=i: self._add(i, p))
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: self._close())

    def _add(self, layer: int, p: torch.Tensor) -> None:
        self.sums[layer] += float(p.grad.detach().float().pow(2).sum())

    def _close(self) -> None:
        self.rows.append([s ** 0.5 for s in self.sums])
        self.sums = [0.0] * len(self.sums)


def _train(run: Run, args: CompareArgs, data_dir: Path, device: torch.device, warmup: int, loss_fn=lm_loss,
           on_model=None) -> Run:
    """Train run.config on the comparison's windows; a non-finite loss ends the run (diverged_at), not the recipe."""
    seed_everything(args.seed)
    model = Transformer(run.config).to(device)
    optimizer = make_adamw(model, args.lr, 0.1, device_type=device.type)
    if on_model is not None:
        on_model(model, optimizer)
    sampler = WindowSampler(data_dir, "train", args.batch_size, args.seq_len, seed=args.seed)
    settings = LoopSettings(max_steps=args.max_steps, lr=args.lr, warmup_steps=warmup,
                            eval_interval=args.eval_interval, progress=args.progress)
    state = TrainState()

    def next_batch():
        idx, targets = sampler.next_batch()
        return idx.to(device), targets.to(device)

    def evaluate() -> float:
        return mean_heldout_loss(model, sequential_windows(data_dir, "val", args.batch_size, args.seq_len,
                                                           args.eval_tokens))

    log.info(f"training {run.name}: {count_parameters(model) / 1e6:.2f}M parameters")
    t0 = time.perf_counter()
    try:
        train_loop(model, optimizer, next_batch, settings, state, evaluate=evaluate, loss_fn=loss_fn)
    except UserError as e:  # the loop refuses to go on after a non-finite loss: that is the measurement
        run.diverged_at = state.step + 1
        log.warn(f"{run.name}: {e}")
    run.seconds = time.perf_counter() - t0
    run.history, run.model, run.n_params = state.history, model.eval(), count_parameters(model)
    return run


def _plot(path: Path, series: dict[str, tuple[list, list]], xlabel: str, ylabel: str, title: str,
          logy: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (x, y) in series.items():
        ax.plot(x, y, label=name, linewidth=1)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _finish(out: Path, title: str, lines: list[str], summary: dict) -> dict:
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "report.md", f"# {title}\n\n" + "\n".join(lines) + "\n")
    log.info(f"report in {out / 'report.md'}")
    return summary


def norms(args: NormsArgs) -> dict:
    """Pre-LN and Post-LN, each with and without warmup: loss curves and per-layer gradient norms."""
    out, device = Path(args.out), resolve_device(args.device)
    data_dir = _data(args)
    vocab = read_manifest(data_dir)["vocab_size"]
    runs = []
    for placement in ("pre", "post"):
        for warmup in (args.warmup_steps, 0):
            config = _base(args, vocab, norm="layernorm", norm_placement=placement)
            run = Run(f"{placement}-LN, warmup {warmup}", config)
            probes: list[GradNorms] = []
            _train(run, args, data_dir, device, warmup, on_model=lambda m, o, probes=probes: probes.append(
                GradNorms(m, o)))
            rows = probes[0].rows
            early = rows[:max(1, len(rows) // 10)]  # the first tenth: where Post-LN's trouble shows
            per_layer = torch.tensor(early).mean(0).tolist() if early else []
            run.extra = {"grad_norms": rows, "early_grad_norm_per_layer": per_layer,
                         "max_loss": max((r["loss"] for r in run.history), default=None),
                         "loss_at_tenth": run.history[len(run.history) // 10]["loss"] if run.history else None}
            runs.append(run)
    _plot(out / "loss.png", {r.name: ([h["step"] for h in r.history], [h["loss"] for h in r.history]) for r in runs},
          "step", "train loss (nats/token)", "Pre-LN vs Post-LN", logy=True)
    _plot_grad_norms(out / "grad_norms.png", runs)
    lines = [f"{args.n_layer} layers, width {args.n_embd}, LayerNorm, lr {args.lr}, {args.max_steps} steps of "
             f"{args.batch_size}x{args.seq_len} tokens, gradient clipping at 1.0; warmup {args.warmup_steps} or 0.",
             "", "| run | loss at 10% | final train loss | final val loss | max loss | diverged at | "
             "grad norm early, last/first layer |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        s, g = r.summary(), r.extra["early_grad_norm_per_layer"]
        ratio = g[-1] / g[0] if g and g[0] else None
        lines.append(f"| {r.name} | {_fmt(s['loss_at_tenth'])} | {_fmt(s['final_loss'])} | "
                     f"{_fmt(s['final_val_loss'])} | {_fmt(s['max_loss'])} | {s['diverged_at'] or 'no'} | "
                     f"{_fmt(ratio, 2)} |")
    lines += ["", "![loss](loss.png)", "", "![gradient norms](grad_norms.png)", "",
              "Post-LN puts a norm after each residual sum, so the gradient reaching early layers passes through "
              "every norm above it; with Adam's large first steps and no warmup it lags or diverges (Xiong et al. "
              "2020, 'On Layer Normalization in the Transformer Architecture')."]
    return _finish(out, "Pre-LN vs Post-LN", lines,
                   {"runs": [r.summary() for r in runs], "args": dataclasses.asdict(args)})


def _plot_grad_norms(path: Path, runs: list[Run]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 3.6), sharey=True, squeeze=False)
    for ax, r in zip(axes[0], runs, strict=True):
        rows = r.extra["grad_norms"]
        for layer in range(len(rows[0]) if rows else 0):
            ax.plot(range(1, len(rows) + 1), [row[layer] for row in rows], label=f"layer {layer}", linewidth=0.8)
        ax.set(title=r.name, xlabel="step", yscale="log")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("gradient norm before clipping")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def positions(args: PositionsArgs) -> dict:
    """Each position scheme trained at length L; bits per byte on the validation split at L and at 2L."""
    out, device = Path(args.out), resolve_device(args.device)
    data_dir = _data(args)
    tokenizer = Tokenizer.load(data_dir / read_manifest(data_dir).get("tokenizer", TOKENIZER_FILE))
    L, runs = args.seq_len, []
    for pos in args.positions:
        extrapolates = pos != "learned"  # a learned table has no row past L
        config = _base(args, tokenizer.vocab_size, pos=pos, seq_len=2 * L if extrapolates else L)
        run = _train(Run(pos, config), args, data_dir, device, args.warmup_steps)
        at_l = model_bpb(run.model, tokenizer, data_dir, batch_size=args.batch_size, seq_len=L)["val_bpb"]
        at_2l = model_bpb(run.model, tokenizer, data_dir, batch_size=args.batch_size // 2 or 1,
                          seq_len=2 * L)["val_bpb"] if extrapolates else None
        by_position = loss_by_position(run.model, sequential_windows(data_dir, "val", args.batch_size // 2 or 1,
                                                                      config.seq_len), config.seq_len)
        run.extra = {"bpb_at_L": at_l, "bpb_at_2L": at_2l, "loss_by_position": by_position}
        runs.append(run)
        log.info(f"{pos}: {at_l:.4f} bits/byte at {L} tokens, {_fmt(at_2l, 4)} at {2 * L}")
    _plot(out / "loss.png", {r.name: ([h["step"] for h in r.history], [h["loss"] for h in r.history]) for r in runs},
          "step", "train loss (nats/token)", f"positions, trained at {L} tokens")
    _plot_bpb(out / "bpb.png", runs, L)
    _plot_by_position(out / "loss_by_position.png", runs, L)
    lines = [f"{args.n_layer} layers, width {args.n_embd}, Llama's shape otherwise; trained on {L}-token windows "
             f"for {args.max_steps} steps. Bits per byte over the whole validation split, every token once.", "",
             f"| position | val bpb at {L} | val bpb at {2 * L} | change |", "|---|---|---|---|"]
    for r in runs:
        a, b = r.extra["bpb_at_L"], r.extra["bpb_at_2L"]
        lines.append(f"| {r.name} | {a:.4f} | {_fmt(b, 4)} | {_fmt(None if b is None else b - a, 4)} |")
    lines += ["", "A scheme that extrapolates gets lower or equal bpb at 2L (each token sees more context); one that "
              "does not gets worse. Learned positions cannot run past L at all.", "", "![bpb](bpb.png)", "",
              f"Held-out loss at each position of {2 * L}-token windows (a moving mean over 8 positions): past "
              f"{L} each scheme meets positions it never trained on.", "",
              "![loss by position](loss_by_position.png)", "", "![loss](loss.png)"]
    return _finish(out, "Positional variants", lines,
                   {"runs": [r.summary() for r in runs], "args": dataclasses.asdict(args)})


def _plot_by_position(path: Path, runs: list[Run], L: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        loss = torch.tensor(r.extra["loss_by_position"])
        smooth = F.avg_pool1d(loss[None, None], 8, stride=1)[0, 0]  # (T - 7,) moving mean over 8 positions
        ax.plot(range(4, 4 + len(smooth)), smooth.tolist(), label=r.name, linewidth=1)
    ax.axvline(L, color="gray", linestyle="--", linewidth=0.8)
    ax.text(L, ax.get_ylim()[1], f" trained length {L}", va="top", fontsize=8, color="gray")
    ax.set(xlabel="position in the window", ylabel="held-out loss (nats/token)", title="loss by position")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def _plot_bpb(path: Path, runs: list[Run], L: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x = range(len(runs))
    ax.bar([i - 0.2 for i in x], [r.extra["bpb_at_L"] for r in runs], width=0.4, label=f"at {L}")
    at_2l = [(i, r.extra["bpb_at_2L"]) for i, r in enumerate(runs) if r.extra["bpb_at_2L"] is not None]
    ax.bar([i + 0.2 for i, _ in at_2l], [b for _, b in at_2l], width=0.4, label=f"at {2 * L}")
    for i, r in enumerate(runs):
        if r.extra["bpb_at_2L"] is None:  # a learned table has no row past L
            ax.text(i + 0.2, r.extra["bpb_at_L"], f"no\nposition\npast {L}", ha="center", va="top", fontsize=7)
    ax.set_xticks(list(x), [r.name for r in runs])
    ax.set(ylabel="validation bits per byte", title="positions: training length and twice it")
    ax.set_ylim(bottom=min(r.extra["bpb_at_L"] for r in runs) * 0.9)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def moe(args: MoEArgs) -> dict:
    """A mixture of experts against a dense model of its active size and one of its total size."""
    out, device = Path(args.out), resolve_device(args.device)
    data_dir = _data(args)
    vocab = read_manifest(data_dir)["vocab_size"]
    E, k, size = args.n_expert, args.expert_top_k, args.expert_size
    configs = {
        f"dense, active size ({k}x{size})": _base(args, vocab, intermediate_size=k * size),
        f"MoE {E} experts, top-{k}": _base(args, vocab, n_expert=E, expert_top_k=k, expert_size=size,
                                           capacity_factor=args.capacity_factor, aux_loss_coef=args.aux_loss_coef,
                                           z_loss_coef=args.z_loss_coef),
        f"dense, total size ({E}x{size})": _base(args, vocab, intermediate_size=E * size),
    }
    runs = []
    for name, config in configs.items():
        stats: list[list[dict]] = []  # per step: each MoE layer's routing statistics

        def loss_fn(model, batch, stats=stats):
            loss = moe_lm_loss(model, batch)
            stats.append(model.routing_stats())
            return loss

        run = _train(Run(name, config), args, data_dir, device, args.warmup_steps,
                     loss_fn=loss_fn if config.n_expert else lm_loss)
        tps = [h["tokens_per_s"] for h in run.history[len(run.history) // 5:]]  # after the first fifth: warm
        run.extra = {"tokens_per_s": sum(tps) / max(1, len(tps)), "active_params": _active_params(config, run.model)}
        if stats:
            run.extra["load"] = _load_summary(stats)
            for i, share in enumerate(run.extra["load"]["share"]):
                log.info(f"{name}: layer {i} expert shares " + " ".join(f"{s:.2f}" for s in share))
        runs.append(run)
    tokens = args.batch_size * args.seq_len
    _plot(out / "loss.png", {r.name: ([h["step"] * tokens for h in r.history], [h.get("ce", h["loss"])
                                                                             for h in r.history]) for r in runs},
          "tokens", "train cross-entropy (nats/token)", "MoE vs dense")
    moe_run = next(r for r in runs if r.config.n_expert)
    _plot_load(out / "expert_load.png", moe_run.extra["load"])
    lines = [f"{args.n_layer} layers, width {args.n_embd}, {args.max_steps} steps of {tokens} tokens; the MoE has "
             f"{E} experts of width {size}, top-{k}, aux loss {args.aux_loss_coef}, z-loss {args.z_loss_coef}, "
             f"capacity factor {args.capacity_factor}.", "",
             "| model | total params | active params | final train CE | final val loss | tokens/s |",
             "|---|---|---|---|---|---|"]
    for r in runs:
        s = r.summary()
        lines.append(f"| {r.name} | {r.n_params / 1e6:.2f}M | {r.extra['active_params'] / 1e6:.2f}M | "
                     f"{_fmt(s['final_loss'])} | {_fmt(s['final_val_loss'])} | {r.extra['tokens_per_s']:.0f} |")
    dropped = moe_run.extra["load"]["dropped_fraction"]
    lines += ["", f"Expert load over training (share of the MoE's token assignments per expert; {1 / E:.3f} is "
              f"even): dropped assignments {dropped:.2%}.", "", "![loss](loss.png)", "", "![load](expert_load.png)"]
    return _finish(out, "Mixture of experts vs dense", lines,
                   {"runs": [r.summary() for r in runs], "args": dataclasses.asdict(args)})


def _active_params(config: ModelConfig, model: Transformer) -> int:
    """Parameters one token uses: all of them for a dense model, k experts of n_expert for a mixture."""
    total = count_parameters(model)
    if not config.n_expert:
        return total
    per_expert = sum(p.numel() for p in model.blocks[0].mlp.experts[0].parameters())
    return total - config.n_layer * (config.n_expert - config.expert_top_k) * per_expert


def _load_summary(stats: list[list[dict]]) -> dict:
    """Routing over a whole run: each layer's share of assignments per expert, the dropped fraction, and the
    busiest expert's share per step (1/E when perfectly even)."""
    counts = torch.tensor([[layer["tokens"] for layer in step] for step in stats], dtype=torch.float64)  # (S, L, E)
    dropped = sum(layer["dropped"] for step in stats for layer in step)
    total = counts.sum(0)  # (L, E)
    per_step = counts / counts.sum(-1, keepdim=True).clamp(min=1)  # (S, L, E)
    return {"share": (total / total.sum(-1, keepdim=True)).tolist(),
            "dropped_fraction": dropped / max(1.0, float(counts.sum()) + dropped),
            "per_step_max_share": per_step.amax(dim=(1, 2)).tolist()}


def _plot_load(path: Path, load: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    share = torch.tensor(load["share"])  # (layers, E)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    im = a.imshow(share.numpy(), cmap="viridis", aspect="auto")
    a.set(xlabel="expert", ylabel="layer", title="share of tokens per expert (training)")
    fig.colorbar(im, ax=a)
    b.plot(range(1, len(load["per_step_max_share"]) + 1), load["per_step_max_share"], linewidth=0.8)
    b.axhline(1 / share.shape[1], color="gray", linestyle="--", label="even")
    b.set(xlabel="step", ylabel="busiest expert's share", title="imbalance over training")
    b.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def attention(args: AttentionMapArgs) -> dict:
    """Every head's attention weights for one prompt, drawn as a grid of layers x heads."""
    from llmlab.loading import load

    pretrained = load(args.model, device=resolve_device(args.device))
    model, tokenizer = pretrained.model, pretrained.tokenizer
    if tokenizer is None:
        raise UserError(f"--model {args.model}: has no tokenizer to encode the prompt with")
    ids = tokenizer.encode(args.prompt)
    if not ids:
        raise UserError("--prompt: encodes to no tokens; give some text")
    device = next(model.parameters()).device
    idx = torch.tensor([ids], device=device)
    inputs = (idx,)
    if hasattr(model, "decoder"):  # an encoder-decoder: the decoder reads --target
        if not args.target:
            raise UserError(f"--model {args.model} is an encoder-decoder; give --target, the decoder's text")
        start = getattr(model.config, "decoder_start_token_id", 0) or 0
        inputs = (idx, torch.tensor([[start, *tokenizer.encode(args.target)]], device=device))
    maps = attention_maps(model, *inputs)
    names = list(maps)
    if args.layers:
        bad = [i for i in args.layers if not 0 <= i < len(names)]
        if bad:
            raise UserError(f"--layers {bad}: the model has attention modules 0..{len(names) - 1}")
        names = [names[i] for i in args.layers]
    maps = {n: maps[n] for n in names}
    tokens = [tokenizer.decode([i]) for i in ids]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_attention_maps(maps, out / "attention.png", tokens=tokens,
                        title=f"{args.model}: {args.prompt[:60]!r}")
    # where each head looks on average: at the first token (an "attention sink"), the previous one, itself
    stats = {n: {"to_first": w[:, 1:, 0].mean(-1).tolist(),
                 "to_previous": w.diagonal(-1, -2, -1).mean(-1).tolist() if w.shape[-2] > 1 else [],
                 "to_self": w.diagonal(0, -2, -1).mean(-1).tolist()}
             for n, w in maps.items() if w.shape[-1] == w.shape[-2]}
    summary = {"model": args.model, "prompt": args.prompt, "tokens": tokens, "modules": names,
               "shapes": {n: list(w.shape) for n, w in maps.items()}, "head_stats": stats}
    write_json_atomic(out / "maps.json", summary)
    log.info(f"{len(names)} attention modules drawn to {out / 'attention.png'}")
    return summary
