"""`llmlab speedrun`: raw text to a trained model, samples and a report, in minutes, with no download.

Steps: train a BPE tokenizer on the corpus (default: Python's own standard
library), tokenise it into shards, pretrain a small Llama-style model for the
time budget, then measure held-out bits per byte against gzip -9 and xz -9,
sample some code, and write `<out>/report.md` and `<out>/report.json`.
"""

import ast
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from llmlab.common import checkpoint, log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device
from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic, write_text_atomic
from llmlab.data.loader import read_manifest
from llmlab.data.shards import prepare
from llmlab.data.sources import default_corpus, leading_text, read_documents, split_documents
from llmlab.eval.bpb import compressor_bpb, model_bpb
from llmlab.infer.generate import generate
from llmlab.models import get_preset
from llmlab.models.config import PRESETS
from llmlab.tokenizer import Tokenizer
from llmlab.train.loop import PRECISIONS, LoopSettings
from llmlab.train.optimizers import OPTIMIZERS
from llmlab.train.plot import plot_loss_curve
from llmlab.train.pretrain import pretrain, seconds_per_token

SAMPLE_PROMPTS = ["def ", "import os\n", "class ", "    def __init__(self"]


@dataclass
class SpeedrunArgs:
    out: str = arg("runs/speedrun", "run folder for data, checkpoint and report")
    data: list[str] = arg([], "text files/folders/.jsonl/.parquet; default: Python's own standard library")
    pipeline: str | None = arg(None, "clean the training documents with this pipeline file (TOML/JSON) or "
                                     "preset (code, web) before tokenising; the held-out split stays raw, so runs "
                                     "compare on the same text")
    preset: str = arg("llama-tiny", "model preset", choices=sorted(PRESETS))
    vocab_size: int = arg(4096, "tokenizer vocabulary size")
    tokenizer_mb: float = arg(4.0, "MB of text to train the tokenizer on")
    max_minutes: float = arg(9.0, "wall-clock budget for the whole run")
    max_steps: int | None = arg(None, "optimizer steps (default: as many as fit the time budget, measured on "
                                      "this machine)")
    batch_size: int = arg(8, "sequences per step (small batches: more updates from the few tokens a CPU sees "
                             "in minutes)")
    seq_len: int | None = arg(None, "context length (default: the preset's)")
    lr: float | None = arg(None, "peak learning rate (default: 5e-3 with muon, 3e-3 with the others)")
    optimizer: str = arg("muon", "optimizer (muon: orthogonalised updates for the blocks' matrices, AdamW for "
                                 "embeddings and norms; it beat AdamW by 0.09-0.1 bits per byte at this budget)",
                         choices=sorted(OPTIMIZERS))
    device: str = arg("auto", "cpu, cuda or auto")
    precision: str = arg("auto", "matmul precision under autocast: auto times a few steps in float32 and bf16 "
                                 "and trains in bf16 where it is at least 10% faster (CPUs with bf16 matmul "
                                 "units, GPUs); the held-out evaluation is float32 whatever trains",
                         choices=sorted(PRECISIONS))
    compile: bool = arg(False, "torch.compile the model")
    seed: int = arg(1337, "random seed")
    samples: int = arg(4, "how many samples to generate for the report")
    sample_tokens: int = arg(160, "new tokens per sample")
    resume: bool = arg(False, "resume pretraining from <out>/checkpoint")
    progress: bool = arg(True, "show progress bars")


# Peak learning rates measured for the 9-minute budget (one thread, llama-tiny): Muon took 5e-3 (1.583 bits per
# byte) over 3e-3 (1.597); AdamW's 3e-3 is the earlier default. Other optimizers start from AdamW's.
DEFAULT_LR = {"muon": 5e-3}
# What a resumed speedrun must share with the interrupted one.
RESUME_KEYS = ("preset", "vocab_size", "batch_size", "seq_len", "lr", "optimizer", "seed", "precision")
# bf16 must beat float32's step time by this much to be chosen: a closer call is within the timing noise
BF16_MIN_SPEEDUP = 1.1


def _parses_as_python(text: str) -> bool:
    """Does the sample parse, once the last (probably cut-off) line is dropped?"""
    lines = text.split("\n")
    body = "\n".join(lines[:-1]) if len(lines) > 1 else text
    try:
        ast.parse(body)
        return True
    except (SyntaxError, ValueError):
        return False


def _samples(model, tokenizer, n: int, max_new_tokens: int, seed: int) -> list[dict]:
    out = []
    for i in range(n):
        prompt = SAMPLE_PROMPTS[i % len(SAMPLE_PROMPTS)]
        ids = generate(model, tokenizer.encode(prompt), max_new_tokens, temperature=0.8, top_k=50, seed=seed + i,
                       eos_id=tokenizer.eos_id)
        text = prompt + tokenizer.decode([t for t in ids if t != tokenizer.eos_id])
        out.append({"prompt": prompt, "text": text, "parses": _parses_as_python(text)})
    return out


def _precision(args: SpeedrunArgs, model_config, data_dir: Path, lr: float, device) -> tuple[str, float, float]:
    """The precision to train in, its measured seconds per token, and float32's (the evaluation's)."""
    def probe(precision: str) -> float:
        return seconds_per_token(model_config, data_dir, args.batch_size, lr, seed=args.seed + 1, device=device,
                                 optimizer=args.optimizer, precision=precision)

    fp32 = probe("fp32")
    if args.resume and args.precision == "auto":  # the interrupted run's, whatever this machine would choose
        chosen = checkpoint.read_meta(Path(args.out) / "checkpoint")["run"].get("precision", "fp32")
    elif args.precision == "auto":
        bf16 = probe("bf16")
        chosen = "bf16" if bf16 * BF16_MIN_SPEEDUP < fp32 else "fp32"
        log.info(f"precision: {chosen} (bf16 steps ran at {fp32 / bf16:.2f}x float32's speed here)")
    else:
        chosen = args.precision
    return chosen, (fp32 if chosen == "fp32" else probe(chosen)), fp32


def run(args: SpeedrunArgs) -> dict:
    t_start = time.perf_counter()
    out = Path(args.out)
    data_dir = out / "data"
    if out.exists() and (out / "checkpoint").exists() and not args.resume:
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose a new --out")

    if not (data_dir / "manifest.json").exists():
        docs = read_documents(args.data) if args.data else default_corpus()
        train_docs, val_docs = split_documents(docs)
        if args.pipeline:
            from llmlab.data.pipeline import load_pipeline, process_documents
            from llmlab.recipes.shared import eval_task_texts

            pipe = load_pipeline(args.pipeline, resolve_task=eval_task_texts)
            train_docs, _ = process_documents(train_docs, pipe, out / "pipeline")
        sample = leading_text(train_docs, int(args.tokenizer_mb * 1e6))
        log.info(f"[1/4] tokenizer: {args.vocab_size} tokens from {len(sample) / 1e6:.1f}M characters")
        tokenizer = Tokenizer.train(sample, args.vocab_size, progress=args.progress)
        log.info(f"[2/4] data: tokenising {len(train_docs)} train and {len(val_docs)} validation documents")
        prepare(train_docs, val_docs, tokenizer, data_dir)
    t_data = time.perf_counter() - t_start

    device = resolve_device(args.device)
    overrides = {"vocab_size": read_manifest(data_dir)["vocab_size"]}
    if args.seq_len:
        overrides["seq_len"] = args.seq_len
    model_config = get_preset(args.preset, **overrides)
    lr = args.lr or DEFAULT_LR.get(args.optimizer, 3e-3)
    precision, per_token, fp32_per_token = _precision(args, model_config, data_dir, lr, device)
    # Keep time for the end: a forward pass over the validation split costs ~1/3 of a float32 training step
    # per token (no backward), sampling one token costs a forward over the context; 10% margin for periodic
    # evaluations.
    val_tokens = read_manifest(data_dir)["val"]["tokens"]
    reserve = 10.0 + val_tokens * fp32_per_token / 3 + args.samples * args.sample_tokens * fp32_per_token * 2
    reserve = min(reserve, 0.25 * args.max_minutes * 60)
    train_seconds = (args.max_minutes * 60 - (time.perf_counter() - t_start) - reserve) / 1.1
    if train_seconds <= 10:
        raise UserError(f"--max-minutes {args.max_minutes}: no time left for training after preparing data "
                        f"({t_data:.0f}s) and keeping {reserve:.0f}s for evaluation; raise the budget")
    expected_steps = max(10, int(train_seconds / (per_token * args.batch_size * model_config.seq_len)))
    settings = LoopSettings(max_steps=args.max_steps or 0, lr=lr, max_seconds=train_seconds,
                            warmup_steps=min(30, max(1, expected_steps // 10)),
                            eval_interval=max(25, expected_steps // 8),  # about 8 points on the validation curve
                            ckpt_interval=max(50, expected_steps // 4), progress=args.progress)
    if not args.max_steps:  # the schedule follows the clock; steps only cap the run
        settings.max_steps, settings.schedule_by_time = 100 * expected_steps, True
    if args.resume:  # keep the interrupted run's warmup: its schedule must go on unchanged
        settings.warmup_steps = checkpoint.read_meta(out / "checkpoint")["run"]["warmup_steps"]
    run_record = {**dataclasses.asdict(args), "lr": lr, "precision": precision,
                  "warmup_steps": settings.warmup_steps}
    length = (f"{train_seconds:.0f}s, about {expected_steps} steps" if settings.schedule_by_time
              else f"{settings.max_steps} steps")
    log.info(f"[3/4] pretraining {args.preset} for {length}")
    summary = pretrain(model_config, data_dir, out, settings, batch_size=args.batch_size, seed=args.seed,
                       device=device, compile=args.compile, eval_tokens=16384, resume=args.resume,
                       run=run_record, resume_keys=RESUME_KEYS, optimizer_name=args.optimizer,
                       precision=precision)

    log.info("[4/4] evaluating on held-out text and sampling")
    model, tokenizer = summary["model"], summary["tokenizer"]
    bpb = model_bpb(model, tokenizer, data_dir, batch_size=args.batch_size)
    baselines = compressor_bpb((data_dir / "val.txt").read_bytes())
    samples = _samples(model, tokenizer, args.samples, args.sample_tokens, args.seed)
    plot_loss_curve(summary["history"], out / "loss.png", title=f"speedrun: {args.preset}")
    report = {
        **bpb, **baselines,
        "beats_xz": bpb["val_bpb"] < baselines["xz_bpb"],
        "tokens_per_s": summary["tokens_per_s"], "precision": precision, "n_params": summary["n_params"],
        "tokens_seen": summary["tokens_seen"], "steps": summary["steps"],
        "wall_s": time.perf_counter() - t_start, "train_wall_s": summary["train_wall_s"],
        "final_train_loss": summary["final_train_loss"],
        "parse_rate": sum(s["parses"] for s in samples) / max(1, len(samples)),
        "samples": samples, "config": {"speedrun": {**dataclasses.asdict(args), "lr": lr, "precision": precision},
                                       "model": summary["model_config"].to_dict()},
    }
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", _report_markdown(report))
    log.info(f"val {report['val_bpb']:.3f} bits/byte vs xz -9 {report['xz_bpb']:.3f}, gzip -9 "
             f"{report['gzip_bpb']:.3f}; report in {out / 'report.md'}")
    return report


def _report_markdown(r: dict) -> str:
    cfg = r["config"]["model"]
    verdict = "beats" if r["beats_xz"] else "does not beat"
    lines = [
        "# llmlab speedrun report", "",
        f"The model {verdict} `xz -9` on held-out text: **{r['val_bpb']:.3f} bits per byte** "
        f"(xz -9: {r['xz_bpb']:.3f}, gzip -9: {r['gzip_bpb']:.3f}).", "",
        "| figure | value |", "|---|---|",
        f"| parameters | {r['n_params']:,} |",
        f"| tokens seen | {r['tokens_seen']:,} |",
        f"| steps | {r['steps']} |",
        f"| training tokens/s | {r['tokens_per_s']:,.0f} ({r['precision']} matmuls) |",
        f"| wall time | {r['wall_s']:.0f} s (training {r['train_wall_s']:.0f} s) |",
        f"| final train loss | {r['final_train_loss']:.4f} nats/token |",
        f"| validation loss | {r['val_loss']:.4f} nats/token over {r['val_tokens']:,} tokens "
        f"({r['val_bytes']:,} bytes) |",
        f"| validation bits per byte | {r['val_bpb']:.4f} |",
        f"| gzip -9 / xz -9 bits per byte | {r['gzip_bpb']:.4f} / {r['xz_bpb']:.4f} |",
        f"| samples that parse as Python (last line dropped) | {r['parse_rate']:.0%} |", "",
        "![loss curve](loss.png)", "",
        "## Model", "",
        ", ".join(f"{k}={cfg[k]}" for k in ("vocab_size", "seq_len", "n_layer", "n_head", "n_kv_head", "n_embd",
                                            "intermediate_size", "pos", "norm", "mlp", "tie_embeddings")), "",
        "## Samples", "",
    ]
    for s in r["samples"]:
        lines += [f"Prompt `{s['prompt']!r}` ({'parses' if s['parses'] else 'does not parse'}):", "",
                  "```python", s["text"], "```", ""]
    lines += ["## Run configuration", "", "```json",
              json.dumps(r["config"]["speedrun"], indent=2), "```", ""]
    return "\n".join(lines)
