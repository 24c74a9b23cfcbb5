"""`llmlab fundamentals autograd|backprop|ngram`: the from-scratch basics, each run end to end with a plot.

- `autograd`: the scalar engine trains an MLP on two moons; its final gradients are checked against torch.
- `backprop`: one transformer block on characters (bytes) of real text, gradients by hand checked against
  torch.autograd, then trained with them.
- `ngram`: character n-gram models of every order and smoothing on real text, a perplexity table, samples,
  and llmlab's own Transformer trained on the same characters as the neural baseline.

Each writes a PNG, report.md and a JSON of its numbers into `--out`, and logs a short table. Text defaults to
Python's standard library, split by document so held-out text is never trained on.
"""

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from llmlab.common import log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device
from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic, write_text_atomic
from llmlab.data.sources import default_corpus, read_documents, split_documents
from llmlab.fundamentals import autograd as ag
from llmlab.fundamentals import backprop as bp
from llmlab.fundamentals import ngram as ng
from llmlab.models import ModelConfig, Transformer
from llmlab.train.optim import lr_at, make_adamw


def _positive(**values: float) -> None:
    for flag, value in values.items():
        if not value > 0:
            raise UserError(f"--{flag.replace('_', '-')} {value}: must be positive")


def _texts(data: list[str], val_fraction: float, max_train: int, max_val: int, seed: int) -> tuple[list, list]:
    """Train and held-out documents (split by name), shuffled by seed, cut to character budgets."""
    docs = read_documents(data) if data else default_corpus()
    train, val = split_documents(docs, val_fraction)
    rng = random.Random(seed)

    def budget(split: list, max_chars: int) -> list[str]:
        split = list(split)
        rng.shuffle(split)  # a sorted corpus would otherwise give the first modules alphabetically
        out, total = [], 0
        for _, text in split:
            if total >= max_chars:
                break
            out.append(text[:max_chars - total])
            total += len(out[-1])
        return out

    return budget(train, max_train), budget(val, max_val)


def _finish(out: Path, name: str, result: dict, report: str) -> None:
    write_json_atomic(out / f"{name}.json", result)
    write_text_atomic(out / "report.md", report)
    log.info(f"wrote {out / (name + '.png')}, {out / 'report.md'}, {out / (name + '.json')}")


@dataclass
class AutogradArgs:
    out: str = arg("runs/fundamentals/autograd", "folder for autograd.png, report.md and autograd.json")
    n_samples: int = arg(100, "points in the two-moons dataset")
    noise: float = arg(0.1, "standard deviation of the noise added to each point")
    hidden: list[int] = arg([16, 16], "hidden layer widths of the MLP")
    steps: int = arg(100, "full-batch gradient descent steps (about a second each: every op is a Python object)")
    lr: float = arg(1.0, "first learning rate; decays linearly to a tenth")
    alpha: float = arg(1e-4, "L2 penalty on every weight")
    seed: int = arg(0, "seed for the points and the initial weights")


def _torch_grads_match(run: ag.MoonsRun, alpha: float) -> float:
    """Max |grad| difference between the engine and torch.autograd for the loss of the trained model."""
    loss, _ = ag.hinge_loss(run.model, run.points, run.labels, alpha)
    run.model.zero_grad()
    loss.backward()
    ours = [p.grad for p in run.model.parameters()]
    weights = [(torch.tensor([[w.data for w in n.w] for n in layer.neurons], dtype=torch.float64, requires_grad=True),
                torch.tensor([n.b.data for n in layer.neurons], dtype=torch.float64, requires_grad=True))
               for layer in run.model.layers]
    x = torch.tensor(run.points, dtype=torch.float64)  # (N, 2)
    for i, (w, b) in enumerate(weights):
        x = x @ w.T + b  # (N, out)
        x = x.relu() if i < len(weights) - 1 else x
    y = torch.tensor(run.labels, dtype=torch.float64)
    reg = sum((w**2).sum() + (b**2).sum() for w, b in weights)
    ((1 - y * x[:, 0]).relu().mean() + alpha * reg).backward()
    theirs = [g for w, b in weights for row, gb in zip(w.grad, b.grad, strict=True) for g in (*row.tolist(), gb.item())]
    return max(abs(a - b) for a, b in zip(ours, theirs, strict=True))


def autograd(args: AutogradArgs) -> dict:
    _positive(steps=args.steps, lr=args.lr)
    if args.n_samples < 2 or not args.hidden or min(args.hidden) < 1:
        raise UserError(f"--n-samples {args.n_samples} / --hidden {args.hidden}: need at least 2 points and "
                        "hidden widths >= 1")
    out = Path(args.out)
    start = time.perf_counter()
    run = ag.train_moons(args.n_samples, args.noise, args.hidden, args.steps, args.lr, args.alpha, args.seed)
    seconds = time.perf_counter() - start
    diff = _torch_grads_match(run, args.alpha)
    ag.plot_moons(run, out / "autograd.png")
    n_params = len(run.model.parameters())
    result = {"final_loss": run.losses[-1], "final_accuracy": run.accuracies[-1], "parameters": n_params,
              "train_seconds": seconds, "max_abs_grad_diff_vs_torch": diff, "losses": run.losses,
              "accuracies": run.accuracies, "args": vars(args)}
    rows = [(k, run.losses[k], run.accuracies[k]) for k in sorted({0, args.steps // 4, args.steps // 2, args.steps})]
    table = "\n".join(f"| {k} | {loss:.4f} | {acc:.1%} |" for k, loss, acc in rows)
    report = (f"# Scalar autograd: an MLP on two moons\n\n![loss and decision boundary](autograd.png)\n\n"
              f"MLP 2-{'-'.join(map(str, args.hidden))}-1 ({n_params} parameters, each a `Value`), hinge loss, "
              f"{args.n_samples} points, {args.steps} full-batch steps in {seconds:.1f} s.\n\n"
              f"| step | loss | accuracy |\n|---|---|---|\n{table}\n\n"
              f"Gradients of the final loss against torch.autograd (float64): max |difference| = {diff:.2e}.\n")
    _finish(out, "autograd", result, report)
    log.info(f"autograd: loss {run.losses[0]:.4f} -> {run.losses[-1]:.4f}, accuracy {run.accuracies[-1]:.1%}, "
             f"max grad diff vs torch {diff:.1e}")
    return result


@dataclass
class BackpropArgs:
    data: list[str] = arg([], "text files or folders (default: Python's standard library)")
    out: str = arg("runs/fundamentals/backprop", "folder for backprop.png, report.md and backprop.json")
    n_embd: int = arg(64, "width of the block")
    n_head: int = arg(4, "attention heads (must divide --n-embd)")
    seq_len: int = arg(64, "characters (bytes) per window")
    batch_size: int = arg(16, "windows per step")
    steps: int = arg(300, "training steps with the hand-written gradients (0: the gradient check only)")
    lr: float = arg(3e-3, "Adam learning rate")
    dtype: str = arg("float32", "float64 shows the differences are rounding only", choices=["float32", "float64"])
    max_chars: int = arg(2_000_000, "training text budget in characters")
    seed: int = arg(0, "seed for the weights and the windows")


def backprop(args: BackpropArgs) -> dict:
    _positive(n_embd=args.n_embd, n_head=args.n_head, seq_len=args.seq_len, batch_size=args.batch_size,
              lr=args.lr, max_chars=args.max_chars)
    if args.n_embd % args.n_head:
        raise UserError(f"--n-head {args.n_head}: must divide --n-embd {args.n_embd}")
    if args.steps < 0:
        raise UserError(f"--steps {args.steps}: must be 0 or more")
    out = Path(args.out)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    train, val = _texts(args.data, 0.05, args.max_chars, args.max_chars // 10, args.seed)
    streams = {}
    for split, texts in (("train", train), ("val", val)):
        data = torch.tensor(list("\n".join(texts).encode("utf-8")), dtype=torch.long)  # bytes: vocabulary of 256
        if len(data) <= args.seq_len + 1:
            raise UserError(f"--data: the {split} text has {len(data)} bytes; give more than --seq-len "
                            f"{args.seq_len} + 1")
        streams[split] = data
    g = torch.Generator().manual_seed(args.seed)

    def batch(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        data = streams[split]
        starts = torch.randint(0, len(data) - args.seq_len - 1, (args.batch_size,), generator=g).tolist()
        x = torch.stack([data[s:s + args.seq_len] for s in starts])  # (B, T)
        y = torch.stack([data[s + 1:s + args.seq_len + 1] for s in starts])  # (B, T): the next byte
        return x, y

    params = bp.init_params(256, args.n_embd, args.seq_len, seed=args.seed, dtype=dtype)
    at_init = bp.compare_with_autograd(params, *batch("train"), args.n_head)
    start = time.perf_counter()
    losses = bp.train_manual(params, lambda: batch("train"), args.n_head, args.steps, lr=args.lr)
    seconds = time.perf_counter() - start
    val_batch = batch("val")
    trained = bp.compare_with_autograd(params, *val_batch, args.n_head)
    bp.plot_backprop(losses, at_init, str(out / "backprop.png"))
    result = {"dtype": args.dtype, "max_abs_diff_at_init": at_init.worst, "max_abs_diff_trained": trained.worst,
              "per_tensor_at_init": at_init.max_abs_diff, "max_abs_grad_at_init": at_init.max_abs_grad,
              "per_tensor_trained": trained.max_abs_diff, "loss_manual": at_init.loss_manual,
              "loss_autograd": at_init.loss_autograd, "val_loss_trained": trained.loss_manual,
              "train_losses": losses, "train_seconds": seconds, "args": vars(args)}
    table = "\n".join(f"| {name} | {at_init.max_abs_grad[name]:.2e} | {at_init.max_abs_diff[name]:.2e} | "
                      f"{trained.max_abs_diff[name]:.2e} |" for name in params)
    trained_line = (f"Trained {args.steps} steps ({seconds:.1f} s) with these gradients and a hand-written Adam: "
                    f"loss {losses[0]:.3f} -> {losses[-1]:.3f} nats per byte; held-out batch "
                    f"{trained.loss_manual:.3f}.\n\n" if losses else "")
    report = (f"# Manual backpropagation through one transformer block\n\n![loss and gradient check](backprop.png)\n\n"
              f"Embedding, LayerNorm, {args.n_head}-head causal attention, GELU MLP, residuals, final LayerNorm, "
              f"projection and cross-entropy on bytes of real text; every backward written by hand, {args.dtype}.\n\n"
              f"Loss: manual {at_init.loss_manual:.6f}, autograd {at_init.loss_autograd:.6f}.\n\n" + trained_line +
              "| tensor | max abs grad (init) | max abs diff (init) | max abs diff (trained) |\n"
              f"|---|---|---|---|\n{table}\n")
    _finish(out, "backprop", result, report)
    log.info(f"backprop ({args.dtype}): max |manual - autograd| {at_init.worst:.1e} at init, {trained.worst:.1e} "
             f"trained" + (f"; loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else ""))
    return result


@dataclass
class NgramArgs:
    data: list[str] = arg([], "text files or folders (default: Python's standard library)")
    out: str = arg("runs/fundamentals/ngram", "folder for ngram.png, report.md and ngram.json")
    orders: list[int] = arg([1, 2, 3, 4, 5, 6, 8], "n-gram orders to compare")
    smoothing: list[str] = arg(list(ng.SMOOTHINGS), f"smoothings to compare: {', '.join(ng.SMOOTHINGS)}")
    k: float = arg(0.01, "add-k's k; small because add-1 over ~100 characters flattens every rare context")
    max_train_chars: int = arg(1_000_000, "training text budget in characters (counting is pure Python)")
    max_val_chars: int = arg(200_000, "held-out text budget in characters")
    sample_chars: int = arg(300, "characters to sample from the best model")
    neural_steps: int = arg(600, "training steps of the neural baseline (0: skip it)")
    neural_layers: int = arg(2, "neural baseline: layers")
    neural_embd: int = arg(128, "neural baseline: width")
    neural_seq_len: int = arg(128, "neural baseline: context in characters")
    batch_size: int = arg(32, "neural baseline: windows per step")
    lr: float = arg(3e-3, "neural baseline: peak learning rate")
    device: str = arg("auto", "neural baseline: cpu, cuda or auto")
    seed: int = arg(0, "seed for the document shuffle, sampling and the neural model")


def _neural_baseline(train: list[str], val: list[str], vocab: list[str], args: NgramArgs) -> dict:
    """llmlab's Transformer on the same characters; scored on exactly the characters the n-grams predict."""
    stoi = {c: i for i, c in enumerate(vocab)}
    bos = len(vocab)  # an input-only id marking each document's start, as the n-grams' BOS padding does

    def stream(texts: list[str]) -> torch.Tensor:
        ids = []
        for text in texts:
            ids.append(bos)
            ids.extend(stoi[c] for c in ng.normalize(text, set(vocab)))
        return torch.tensor(ids, dtype=torch.long)

    L = args.neural_seq_len
    train_ids, val_ids = stream(train), stream(val)
    if len(train_ids) <= L + 1:
        raise UserError(f"--neural-seq-len {L}: longer than the training text ({len(train_ids)} characters)")
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    config = ModelConfig(vocab_size=bos + 1, seq_len=L, n_layer=args.neural_layers, n_head=4,
                         n_embd=args.neural_embd, pos="learned", norm="layernorm", mlp="gelu")
    model = Transformer(config).to(device)
    opt = make_adamw(model, args.lr, weight_decay=0.1, device_type=device.type)
    g = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    model.train()
    for step in range(args.neural_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.neural_steps, args.lr, warmup_steps=min(50, args.neural_steps // 10))
        starts = torch.randint(0, len(train_ids) - L - 1, (args.batch_size,), generator=g).tolist()
        x = torch.stack([train_ids[s:s + L] for s in starts]).to(device)  # (B, T)
        y = torch.stack([train_ids[s + 1:s + L + 1] for s in starts]).to(device)  # (B, T)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=bos)  # BOS is never a target
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    seconds = time.perf_counter() - start
    model.eval()
    pad = (-(len(val_ids) - 1)) % L  # BOS padding (ignored as a target) to whole windows
    val_ids = torch.cat([val_ids, torch.full((pad,), bos)])
    x, y = val_ids[:-1].view(-1, L), val_ids[1:].view(-1, L)  # (N, T): windows side by side, contexts restart
    nll, chars = 0.0, int((y != bos).sum())
    with torch.no_grad():
        for i in range(0, len(x), 64):
            logits = model(x[i:i + 64].to(device))
            nll += F.cross_entropy(logits.flatten(0, 1).float(), y[i:i + 64].flatten().to(device),
                                   ignore_index=bos, reduction="sum").item()
    return {"val_ppl": math.exp(nll / chars), "val_bpc": nll / chars / math.log(2), "chars": chars,
            "parameters": sum(p.numel() for p in model.parameters()), "train_seconds": seconds,
            "final_train_loss": loss.item() if args.neural_steps else None, "context": L}


def ngram(args: NgramArgs) -> dict:
    _positive(k=args.k, max_train_chars=args.max_train_chars, max_val_chars=args.max_val_chars)
    if not args.orders or min(args.orders) < 1:
        raise UserError(f"--orders {args.orders}: give orders of 1 or more")
    unknown = sorted(set(args.smoothing) - set(ng.SMOOTHINGS))
    if unknown or not args.smoothing:
        raise UserError(f"--smoothing {' '.join(args.smoothing)}: choose from {', '.join(ng.SMOOTHINGS)}")
    if args.neural_steps < 0 or args.sample_chars < 0:
        raise UserError("--neural-steps and --sample-chars must be 0 or more")
    if args.neural_steps and (args.neural_embd % 4 or min(args.neural_layers, args.neural_seq_len) < 1):
        raise UserError(f"--neural-embd {args.neural_embd}: must be a multiple of 4 (the baseline has 4 heads), "
                        "with --neural-layers and --neural-seq-len of 1 or more")
    out = Path(args.out)
    train, val = _texts(args.data, 0.05, args.max_train_chars, args.max_val_chars, args.seed)
    start = time.perf_counter()
    rows = []
    for smoothing in args.smoothing:
        rows += ng.perplexity_table(train, val, args.orders, smoothing, args.k)
    ngram_seconds = time.perf_counter() - start
    best = min(rows, key=lambda r: r["val_bpc"])
    counts = ng.count_ngrams(train, best["n"])
    sample = ng.NgramLM(counts, best["n"], best["smoothing"], args.k).sample(args.sample_chars, seed=args.seed)
    neural = _neural_baseline(train, val, counts.vocab, args) if args.neural_steps else None
    ng.plot_perplexity_table(rows, str(out / "ngram.png"), neural["val_bpc"] if neural else None)
    result = {"rows": rows, "best": best, "neural": neural, "sample": sample, "vocab_size": len(counts.vocab),
              "train_chars": sum(map(len, train)), "val_chars": sum(map(len, val)), "ngram_seconds": ngram_seconds,
              "args": vars(args)}
    table = "\n".join(f"| {r['smoothing']} | {r['n']} | {r['val_ppl']:.3f} | {r['val_bpc']:.3f} | {r['train_bpc']:.3f} "
                      f"| {r['contexts']} |" for r in rows)
    if neural:
        table += (f"\n| Transformer ({neural['parameters']:,} params, {args.neural_steps} steps) | {neural['context']} "
                  f"| {neural['val_ppl']:.3f} | {neural['val_bpc']:.3f} | | |")
    report = (f"# Character n-gram models\n\n![bits per character against n](ngram.png)\n\n"
              f"{result['train_chars']:,} training and {result['val_chars']:,} held-out characters "
              f"(split by document), vocabulary {len(counts.vocab)} characters.\n\n"
              f"| smoothing | n | held-out ppl | held-out bits/char | train bits/char | contexts |\n"
              f"|---|---|---|---|---|---|\n{table}\n\n"
              f"Sample from {best['smoothing']} n={best['n']} (seed {args.seed}):\n\n```\n{sample}\n```\n")
    _finish(out, "ngram", result, report)
    for r in rows:
        log.info(f"{r['smoothing']:>5} n={r['n']}: held-out ppl {r['val_ppl']:.3f}, {r['val_bpc']:.3f} bits/char")
    if neural:
        log.info(f"Transformer: held-out ppl {neural['val_ppl']:.3f}, {neural['val_bpc']:.3f} bits/char")
    log.info("sample: " + json.dumps(sample[:120]))
    return result
