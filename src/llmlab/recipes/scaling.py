"""`llmlab scaling sweep`: train a grid of model sizes and token budgets, fit scaling laws, test a prediction.

    llmlab scaling sweep --budget 15 --out runs/scaling

Steps: prepare the default corpus as the speedrun does (or take `--data`), time a few training steps of each
size on this machine, plan isoFLOP budgets that fill `--budget` minutes (a plan.json, kept on rerun), train
every run of the grid (each its own cosine schedule over its own token count: Chinchilla's point that a
schedule longer than the run overstates the loss), fit Chinchilla's approaches 3 and 2
(`llmlab.train.scaling`), predict the loss of one size beyond the grid, train it, and write report.md,
report.json and three PNGs. Rerun with the same --out: finished runs are not redone.

`llmlab.load(out)` opens the model beyond the grid; each grid run's folder is `<out>/runs/NAME`.
"""

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from llmlab.common import log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device
from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic, write_text_atomic
from llmlab.data.loader import read_manifest
from llmlab.data.shards import prepared_folder
from llmlab.data.sources import default_corpus, split_documents
from llmlab.models import ModelConfig, Transformer, get_preset
from llmlab.models.config import PRESETS
from llmlab.models.gpt import flops_per_token
from llmlab.train.loop import LoopSettings
from llmlab.train.pretrain import pretrain, seconds_per_token
from llmlab.train.scaling import bootstrap_law, fit_isoflop, fit_law, non_embedding_params, train_flops
from llmlab.train.scaling_plot import plot_frontier, plot_isoflop, plot_law

# LAYERSxWIDTH ladders around Chinchilla's N_opt ~ sqrt(C / 120) (20 tokens per parameter) for the budgets a
# machine affords in minutes: C ~ 1e11-1e12 FLOPs on a CPU -> ~30k-90k; 16k-160k non-embedding parameters (332k
# beyond) on a CPU, ~0.9M-14M (31M beyond) on a GPU. Larger CPU models would all be undertrained: their loss
# would follow D alone and the law's N term could not be fitted.
SIZES = {"cpu": ["1x32", "2x32", "2x48", "3x64"], "cuda": ["4x128", "6x192", "8x256", "8x384"]}
BEYOND = {"cpu": "3x96", "cuda": "10x512"}
GRID_SHARE = 0.75  # of the training time: the grid; the rest trains the size beyond it
RUN_OVERHEAD_S = 1.5  # per run: building the model, the final evaluation's setup and the checkpoint write


@dataclass
class SweepArgs:
    budget: float = arg(10.0, "wall-clock minutes for the whole sweep (preparing data, the grid, the size "
                              "beyond it, fits)")
    out: str = arg("runs/scaling", "sweep folder: plan.json, runs/, report.md, report.json, PNGs; reruns resume")
    data: str | None = arg(None, "prepared shards (`llmlab data prepare`, or a speedrun's <out>/data); default: "
                                 "Python's standard library prepared into <out>/data")
    vocab_size: int = arg(1024, "tokenizer vocabulary when preparing data (small: the output head's FLOPs, "
                                "which 6ND leaves out, stay a small share of a tiny model's)")
    tokenizer_mb: float = arg(1.0, "MB of text to train the tokenizer on")
    preset: str = arg("llama-tiny", "model family; each size sets its n_layer, n_embd and heads",
                      choices=sorted(PRESETS))
    sizes: list[str] = arg([], "grid sizes as LAYERSxWIDTH, smallest first (default: 1x32 2x32 2x48 3x64 on a "
                               "CPU, larger on a GPU)")
    beyond: str | None = arg(None, "the size beyond the grid to predict, then train (default: 3x96 on a CPU)")
    budgets: int = arg(3, "compute budgets, one isoFLOP curve each")
    budget_ratio: float = arg(3.0, "each compute budget is this many times the last")
    min_flops: float | None = arg(None, "the smallest compute budget C_0 in FLOPs (default: what fills --budget on "
                                        "this machine); set it to plan the same grid on any machine")
    seq_len: int = arg(64, "context length of every run")
    batch_size: int | None = arg(None, "sequences per step (default: 8 on a CPU, 64 on a GPU: a CPU sees few "
                                       "tokens in minutes, and small steps give more updates from them)")
    lr: float = arg(3e-3, "peak learning rate of every run (warmup, then cosine over the run's own steps)")
    min_steps: int = arg(20, "runs planned with fewer optimizer steps are left out of the grid")
    eval_tokens: int = arg(32768, "validation tokens each run's loss is measured on")
    bootstrap: int = arg(200, "bootstrap resamples for the fitted constants' intervals")
    device: str = arg("auto", "cpu, cuda or auto")
    seed: int = arg(1337, "seed of every run")
    progress: bool = arg(True, "show progress bars")


# What a rerun must share with the sweep it continues: everything that shapes the plan or a run.
PLAN_KEYS = ("budget", "data", "vocab_size", "tokenizer_mb", "preset", "sizes", "beyond", "budgets", "budget_ratio",
             "min_flops", "seq_len", "batch_size", "lr", "min_steps", "eval_tokens", "seed")


def size_config(spec: str, preset: str, vocab_size: int, seq_len: int) -> ModelConfig:
    """"3x64" -> the preset with 3 layers of width 64, heads of 32 dimensions (at least 2 heads)."""
    try:
        n_layer, n_embd = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise UserError(f"--sizes {spec!r}: write a size as LAYERSxWIDTH, like 3x64") from None
    if n_layer < 1 or n_embd < 4 or n_embd % 4:
        raise UserError(f"--sizes {spec!r}: need at least 1 layer and a width that is a multiple of 4")
    n_head = max(2, n_embd // 32)
    while n_embd % n_head or (n_embd // n_head) % 2:  # RoPE wants an even head dimension
        n_head -= 1
    return get_preset(preset, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_kv_head=n_head,
                      vocab_size=vocab_size, seq_len=seq_len)


def _prepare_data(args: SweepArgs, out: Path) -> Path:
    return prepared_folder(args.data, out / "data", lambda: split_documents(default_corpus()), args.vocab_size,
                           int(args.tokenizer_mb * 1e6), args.progress)


def _plan(args: SweepArgs, data_dir: Path, device, batch_size: int, deadline: float) -> dict:
    """Runs that fill the time until `deadline` (a perf_counter time): per budget C_j = C_0 * ratio^j, each
    size N_i trains D = C_j / (6 N_i) tokens; a run that would get fewer than `min_steps` steps is left out."""
    vocab = read_manifest(data_dir)["vocab_size"]
    sizes = args.sizes or SIZES.get(device.type, SIZES["cpu"])
    beyond = args.beyond or BEYOND.get(device.type, BEYOND["cpu"])
    if len(sizes) < 3:
        raise UserError(f"--sizes {' '.join(sizes)}: an isoFLOP parabola needs at least 3 sizes")
    specs = {s: size_config(s, args.preset, vocab, args.seq_len) for s in [*sizes, beyond]}
    n = {s: non_embedding_params(Transformer(c)) for s, c in specs.items()}
    if n[beyond] <= max(n[s] for s in sizes):
        raise UserError(f"--beyond {beyond}: must be larger than every grid size ({n[beyond]:,} parameters)")
    log.info(f"timing {len(specs)} sizes on {device}")
    spt = {s: seconds_per_token(c, data_dir, batch_size, args.lr, device=device) for s, c in specs.items()}
    seconds_left = deadline - time.perf_counter()
    per_run = {s: RUN_OVERHEAD_S + args.eval_tokens * spt[s] / 3 for s in specs}  # evaluation: forward only
    grid_s = GRID_SHARE * seconds_left - args.budgets * sum(per_run[s] for s in sizes)
    # a run of D = C / (6 N) tokens takes C * spt / (6 N) seconds: solve the grid's total time for C_0
    ratios = args.budget_ratio ** np.arange(args.budgets)
    c0 = args.min_flops or max(0.0, grid_s) / (ratios.sum() * sum(spt[s] / (6 * n[s]) for s in sizes))
    step_tokens = batch_size * args.seq_len
    runs = []
    for j, c in enumerate(c0 * ratios):
        for s in sizes:
            steps = round(c / (6 * n[s]) / step_tokens)
            if steps >= args.min_steps:  # fewer steps than that measure the warmup, not the model
                runs.append({"name": f"{s}_c{j}", "size": s, "n": n[s], "c": float(c), "steps": steps,
                             "d": steps * step_tokens})
    if len(runs) < 5:
        raise UserError(f"--budget {args.budget}: only {len(runs)} runs of at least --min-steps {args.min_steps} "
                        "steps fit (the law has 5 constants); raise --budget or lower --min-steps")
    beyond_s = (1 - GRID_SHARE) * seconds_left - per_run[beyond]  # may be negative: then min_steps
    steps = max(args.min_steps, round(beyond_s / spt[beyond] / step_tokens))
    big = {"name": "beyond", "size": beyond, "n": n[beyond], "steps": steps, "d": steps * step_tokens}
    big["c"] = train_flops(big["n"], big["d"])
    return {"args": {k: getattr(args, k) for k in PLAN_KEYS}, "device": str(device), "batch_size": batch_size,
            "seconds_per_token": spt, "n": n, "flops_per_token": {s: flops_per_token(c) for s, c in specs.items()},
            "runs": runs, "beyond": big}


def _train(args: SweepArgs, plan: dict, run: dict, data_dir: Path, folder: Path, device) -> dict:
    """Train one run into `folder` unless its result.json says it is done; returns the result."""
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    # an interrupted run starts over (the sweep's own folder holds the data and the plan: only its checkpoint)
    for stale in [folder / "checkpoint", folder / "checkpoint.old"] if folder == Path(args.out) else [folder]:
        shutil.rmtree(stale, ignore_errors=True)
    vocab = read_manifest(data_dir)["vocab_size"]
    config = size_config(run["size"], args.preset, vocab, args.seq_len)
    settings = LoopSettings(max_steps=run["steps"], lr=args.lr, warmup_steps=max(1, min(30, run["steps"] // 10)),
                            progress=False)
    summary = pretrain(config, data_dir, folder, settings, batch_size=plan["batch_size"], seed=args.seed,
                       device=device, eval_tokens=args.eval_tokens, run={"sweep": plan["args"], **run})
    result = {**run, "loss": summary["final_val_loss"], "train_loss": summary["final_train_loss"],
              "n_total": summary["n_params"], "train_wall_s": summary["train_wall_s"],
              "tokens_per_s": summary["tokens_per_s"]}
    write_json_atomic(done, result)
    return result


def _fits(args: SweepArgs, runs: list[dict], big: dict) -> dict:
    """Both approaches on the grid, and the prediction for the size beyond it (with its bootstrap interval)."""
    n, d, loss = (np.array([r[k] for r in runs], dtype=float) for k in ("n", "d", "loss"))
    law = fit_law(n, d, loss)
    boot = bootstrap_law(n, d, loss, law, samples=args.bootstrap, seed=args.seed)
    predictions = [f.predict(big["n"], big["d"]) for f in boot["fits"]]
    interval = tuple(float(v) for v in np.percentile(predictions, [5, 95])) if predictions else (np.nan, np.nan)
    iso = fit_isoflop(runs)
    c_next = max(r["c"] for r in runs) * args.budget_ratio
    return {"law": law, "intervals": {k: boot[k] for k in ("E", "A", "B", "alpha", "beta")},
            "bootstrap_samples": boot["samples"], "bootstrap_diverged": boot["diverged"], "level": boot["level"],
            "iso": iso,
            "prediction": {"n": big["n"], "d": big["d"], "predicted": float(law.predict(big["n"], big["d"])),
                           "interval": interval},
            "next_budget": {"c": c_next, "n_opt_law": float(law.optimal(c_next)[0]),
                            "n_opt_isoflop": None if iso.a is None else float(iso.n_opt(c_next))}}


def sweep(args: SweepArgs) -> dict:
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.budget <= 0 or args.budgets < 1 or args.budget_ratio <= 1:
        raise UserError("--budget must be positive, --budgets at least 1 and --budget-ratio above 1")
    device = resolve_device(args.device)
    data_dir = _prepare_data(args, out)
    plan_file = out / "plan.json"
    if plan_file.exists():
        plan = json.loads(plan_file.read_text())
        current = json.loads(json.dumps({k: getattr(args, k) for k in PLAN_KEYS}))
        diffs = [f"{k}: {plan['args'].get(k)!r} -> {current[k]!r}" for k in PLAN_KEYS
                 if plan["args"].get(k) != current[k]]
        if diffs:
            raise UserError(f"{plan_file}: this sweep was planned with other settings ({'; '.join(diffs[:3])}); "
                            "rerun it with the same ones or choose a new --out")
        log.info(f"continuing the sweep planned in {plan_file}")
    else:
        batch_size = args.batch_size or (64 if device.type == "cuda" else 8)
        deadline = t_start + args.budget * 60 * 0.95  # 5% for the fits, plots and report
        plan = _plan(args, data_dir, device, batch_size, deadline)
        write_json_atomic(plan_file, plan)
    runs = []
    for run in tqdm(plan["runs"], desc="grid", unit="run", disable=not args.progress, dynamic_ncols=True):
        runs.append(_train(args, plan, run, data_dir, out / "runs" / run["name"], device))
    fits = _fits(args, runs, plan["beyond"])
    write_json_atomic(out / "prediction.json", fits["prediction"])  # written before the run it predicts
    log.info(f"predicted loss of {plan['beyond']['size']} ({plan['beyond']['n']:,} parameters, "
             f"{plan['beyond']['d']:,} tokens): {fits['prediction']['predicted']:.4f}; training it")
    big = _train(args, plan, plan["beyond"], data_dir, out, device)
    beyond = {**fits["prediction"], "loss": big["loss"], "size": big["size"]}
    plot_law(runs, fits["law"], out / "law.png", beyond)
    plot_isoflop(fits["iso"], out / "isoflop.png")
    plot_frontier(fits["iso"], fits["law"], runs, out / "frontier.png")
    report = {"law": fits["law"].to_dict(), "intervals": fits["intervals"], "level": fits["level"],
              "bootstrap_samples": fits["bootstrap_samples"], "bootstrap_diverged": fits["bootstrap_diverged"],
              "isoflop": fits["iso"].to_dict(),
              "beyond": beyond, "next_budget": fits["next_budget"], "runs": runs, "beyond_run": big,
              "plan": {k: plan[k] for k in ("device", "batch_size", "seconds_per_token", "n", "flops_per_token")},
              "wall_s": time.perf_counter() - t_start, "config": dataclasses.asdict(args)}
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", _report_markdown(report))
    log.info(f"L(N, D) = {report['law']['E']:.3f} + {report['law']['A']:.3g}/N^{report['law']['alpha']:.3f} + "
             f"{report['law']['B']:.3g}/D^{report['law']['beta']:.3f}; beyond the grid: predicted "
             f"{beyond['predicted']:.4f}, measured {beyond['loss']:.4f}; report in {out / 'report.md'}")
    return report


def _report_markdown(r: dict) -> str:
    law, iv, b, iso = r["law"], r["intervals"], r["beyond"], r["isoflop"]
    pct = round(r["level"] * 100)
    lines = [
        "# llmlab scaling sweep", "",
        f"{len(r['runs'])} runs on {r['plan']['device']} in {r['wall_s'] / 60:.1f} minutes. N counts non-embedding "
        "parameters, C = 6ND.", "",
        "## Approach 3: L(N, D) = E + A / N^alpha + B / D^beta", "",
        f"| constant | fit | {pct}% bootstrap interval ({r['bootstrap_samples']} resamples) |", "|---|---|---|",
        *[f"| {k} | {law[k]:.4g} | {iv[k][0]:.4g} .. {iv[k][1]:.4g} |" for k in ("E", "A", "B", "alpha", "beta")],
        "", f"Huber objective at the optimum: {law['objective']:.3g}. Resamples whose fit diverged (a constant past "
        f"e^700), left out of the intervals: {r['bootstrap_diverged']}.", "", "![fit](law.png)", "",
        "## Beyond the grid", "",
        f"Size {b['size']} ({b['n']:,} non-embedding parameters) on {b['d']:,} tokens: predicted "
        f"**{b['predicted']:.4f}** ({pct}% interval {b['interval'][0]:.4f} .. {b['interval'][1]:.4f}), measured "
        f"**{b['loss']:.4f}** (error {b['loss'] - b['predicted']:+.4f} nats per token).", "",
        "## Approach 2: isoFLOP curves", "",
        "| C (FLOPs) | sizes | N_opt | loss at N_opt | minimum inside the sizes |", "|---|---|---|---|---|",
    ]
    for bud in iso["budgets"]:
        n_opt = f"{bud['n_opt']:,.0f}" if bud["n_opt"] else "none (not convex)"
        loss_opt = f"{bud['loss_opt']:.4f}" if bud["loss_opt"] else "-"
        inside = "yes" if bud["inside"] else "no"
        lines.append(f"| {bud['c']:.3g} | {len(bud['n'])} | {n_opt} | {loss_opt} | {inside} |")
    nb = r["next_budget"]
    power = f"N_opt = {iso['k']:.3g} * C^{iso['a']:.3f}" if iso["a"] is not None else "no power law (too few minima)"
    lines += ["", f"Power law through the minima: {power}. Approach 3's frontier: N_opt ~ C^"
              f"{law['beta'] / (law['alpha'] + law['beta']):.3f}. At the next budget, C = {nb['c']:.3g}: N_opt "
              f"{nb['n_opt_law']:,.0f} (approach 3)" + (f", {nb['n_opt_isoflop']:,.0f} (approach 2)."
                                                         if nb["n_opt_isoflop"] else "."),
              "", "![isoFLOP](isoflop.png)", "", "![frontier](frontier.png)", "",
              "## Runs", "", "| run | N | N with embeddings | D | C = 6ND | 6N / counted FLOPs per token | steps "
              "| val loss | tokens/s |", "|---|---|---|---|---|---|---|---|---|"]
    fpt = r["plan"]["flops_per_token"]
    for run in [*r["runs"], r["beyond_run"]]:
        lines.append(f"| {run['name']} | {run['n']:,} | {run['n_total']:,} | {run['d']:,} | "
                     f"{train_flops(run['n'], run['d']):.3g} | {6 * run['n'] / fpt[run['size']]:.2f} | "
                     f"{run['steps']} | {run['loss']:.4f} | {run['tokens_per_s']:,.0f} |")
    lines += ["", "6N / counted FLOPs: how much of each model's training compute (`flops_per_token`: the "
              "output head and attention scores included) C = 6ND counts.", ""]
    return "\n".join(lines)
