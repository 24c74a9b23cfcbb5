"""`llmlab quantize`, `llmlab prune` and `llmlab export gguf`: smaller models that `llmlab.load` reopens.

    llmlab quantize --model smollm2-135m-instruct --method int8 --out runs/int8
    llmlab quantize --model smollm2-135m-instruct --method gptq --group-size 128 --n-calib 128 --out runs/gptq
    llmlab prune --model smollm2-135m-instruct --method wanda --sparsity 0.5 --out runs/wanda50
    llmlab prune --method 2:4 --recover-steps 40 --out runs/24-recovered
    llmlab prune curve --methods magnitude wanda
    llmlab export gguf --model runs/speedrun --type q8_0 --out runs/speedrun.gguf

Quantised and pruned outputs are llmlab checkpoints (safetensors + llmlab.json; a quantised one names its
method, bits and group size in a "quantization" record); `llmlab.load(out)` rebuilds the fast layers. The
methods themselves are `llmlab.quantize`'s (rtn, gptq, awq, w8a8, prune, gguf_export).
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from llmlab.common import checkpoint, log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device, seed_everything
from llmlab.common.errors import UserError
from llmlab.common.io import atomic_write, write_json_atomic, write_text_atomic
from llmlab.common.measure import best_seconds
from llmlab.data.sources import default_corpus, split_documents
from llmlab.eval.perplexity import perplexity
from llmlab.eval.runner import evaluate
from llmlab.eval.tasks import resolve_task
from llmlab.finetune.recover import recover_pruned
from llmlab.infer.generate import generate, generate_batch
from llmlab.loading import load
from llmlab.quantize.awq import awq_quantize_model
from llmlab.quantize.calibration import calibration_batches, collect_model_stats
from llmlab.quantize.gguf_export import export_gguf
from llmlab.quantize.gptq import gptq_quantize_model
from llmlab.quantize.model import model_size_bytes, quantize_model
from llmlab.quantize.prune import prune_magnitude, prune_n_m, prune_wanda, semi_structured_support, sparsity_report

QUANT_METHODS = ("int8", "int4", "nf4", "gptq", "awq", "w8a8")
CALIBRATED = ("gptq", "awq", "w8a8")
PRUNE_METHODS = ("magnitude", "2:4", "wanda")


@dataclass
class CalibrationArgs:
    """Text the calibrated methods (GPTQ, AWQ, SmoothQuant, Wanda) run the model on."""

    calib: list[str] = arg([], "text files/folders/.jsonl/.parquet for calibration (default: Python's stdlib)")
    n_calib: int = arg(128, "calibration sequences")
    calib_seq_len: int = arg(512, "tokens per calibration sequence")
    seed: int = arg(0, "seed for choosing calibration windows")
    device: str = arg("cpu", "cpu, cuda or auto")
    progress: bool = arg(True, "show progress bars")


def calibration(lm, args: CalibrationArgs) -> list:
    return calibration_batches(lm.tokenizer, args.calib or None, n=args.n_calib, seq_len=args.calib_seq_len,
                               seed=args.seed)


def save_compressed(lm, out: str, meta: dict, summary: dict) -> None:
    checkpoint.save_checkpoint(out, lm.model, meta, tokenizer=lm.tokenizer)
    size = sum(f.stat().st_size for f in Path(out).iterdir() if f.is_file())
    write_json_atomic(Path(out) / "summary.json", {**summary, "disk_bytes": size,
                                                   "memory_bytes": model_size_bytes(lm.model)})
    log.info(f"wrote {out}: {size / 2**20:.1f} MB on disk, {model_size_bytes(lm.model) / 2**20:.1f} MB in memory")


@dataclass
class QuantizeArgs(CalibrationArgs):
    model: str = arg("smollm2-135m-instruct", "model to quantise: anything llmlab.load opens")
    method: str = arg("int8", "int8/int4 round to nearest, nf4, gptq/awq (calibrated int4 by default), "
                              "w8a8 (int8 weights and activations, SmoothQuant)", choices=QUANT_METHODS)
    bits: int | None = arg(None, "weight bits for gptq/awq (4 or 8; default 4)")
    group_size: int | None = arg(None, "columns sharing a scale (32-256; 0: per output channel); default: per "
                                       "channel for int8 and w8a8, 128 for int4, gptq and awq")
    symmetric: bool = arg(True, "symmetric absmax (no zero point); --no-symmetric for asymmetric zero-point")
    act_order: bool = arg(True, "gptq: quantise columns in order of decreasing activation energy (groups stay "
                                "static, so it costs nothing at inference; without it GPTQ gained half as much)")
    out: str = arg("runs/quantized", "output folder (reopens with llmlab.load)")


def run(args: QuantizeArgs) -> dict:
    """Quantise per `args`; returns the quantization record written to <out>/llmlab.json."""
    if args.method not in QUANT_METHODS:
        raise UserError(f"--method {args.method}: unknown; choose one of {', '.join(QUANT_METHODS)}")
    if args.bits is not None and (args.method not in ("gptq", "awq") or args.bits not in (4, 8)):
        raise UserError(f"--bits {args.bits} with --method {args.method}: only gptq and awq take --bits, 4 or 8")
    if Path(args.out).exists() and any(Path(args.out).iterdir()):
        raise UserError(f"--out {args.out}: folder is not empty; choose a new --out")
    seed_everything(args.seed)
    lm = load(args.model, device=resolve_device(args.device))
    default_group = None if args.method in ("int8", "w8a8") or args.bits == 8 else 128
    group = default_group if args.group_size is None else (args.group_size or None)
    if args.method in ("int8", "int4", "nf4"):
        record = quantize_model(lm.model, args.method, group_size=group, symmetric=args.symmetric,
                                progress=args.progress)
    else:
        batches = calibration(lm, args)
        if args.method == "gptq":
            record = gptq_quantize_model(lm.model, batches, bits=args.bits or 4, group_size=group,
                                         symmetric=args.symmetric, act_order=args.act_order, progress=args.progress)
        elif args.method == "awq":
            record = awq_quantize_model(lm.model, batches, bits=args.bits or 4, group_size=group,
                                        symmetric=args.symmetric, progress=args.progress)
        else:
            stats = collect_model_stats(lm.model, batches, progress=args.progress)
            record = quantize_model(lm.model, "w8a8", act_stats={n: s.absmax for n, s in stats.items()},
                                    progress=args.progress)
    save_compressed(lm, args.out, {"quantization": record, "source": checkpoint.base_reference(args.model)},
                    {"method": args.method, "model": args.model})
    return record


@dataclass
class PruneArgs(CalibrationArgs):
    model: str = arg("smollm2-135m-instruct", "model to prune: anything llmlab.load opens")
    method: str = arg("wanda", "magnitude (smallest |W|), 2:4 (two of every four; by Wanda score with "
                               "calibration), wanda (|W| x input norm)", choices=PRUNE_METHODS)
    sparsity: float = arg(0.5, "share of each layer's weights set to zero (2:4 is always 0.5)")
    scope: str = arg("layer", "magnitude: one threshold per layer, or one global threshold",
                     choices=["layer", "global"])
    recover_steps: int = arg(0, "then this many steps of LoRA recovery fine-tuning on calibration-style text, "
                                "merged through the pruning masks so the zeros stay zero (0: none)")
    recover_lr: float = arg(1e-3, "peak learning rate of the recovery run")
    heldout_kb: float = arg(16.0, "KB of held-out text scored before and after (0: skip)")
    out: str = arg("runs/pruned", "output folder (reopens with llmlab.load)")


def prune(args: PruneArgs) -> dict:
    """Prune per `args`; returns the sparsity report written to <out>/summary.json."""
    if args.method not in PRUNE_METHODS:
        raise UserError(f"--method {args.method}: unknown; choose one of {', '.join(PRUNE_METHODS)}")
    if not 0 < args.sparsity < 1:
        raise UserError(f"--sparsity {args.sparsity}: must be between 0 and 1")
    if Path(args.out).exists() and any(Path(args.out).iterdir()):
        raise UserError(f"--out {args.out}: folder is not empty; choose a new --out")
    if args.recover_steps < 0:
        raise UserError(f"--recover-steps {args.recover_steps}: must be 0 (no recovery) or more")
    seed_everything(args.seed)
    lm = load(args.model, device=resolve_device(args.device))
    heldout = heldout_text(args.heldout_kb)
    bpb = (lambda: perplexity(lm, heldout, progress=args.progress)["bits_per_byte"]) if heldout else (lambda: None)
    dense_bpb = bpb()
    prune_model(lm, args.method, args.sparsity, args, scope=args.scope)
    summary = {"method": args.method, "model": args.model, "bits_per_byte_dense": dense_bpb,
               "bits_per_byte_pruned": bpb()}
    if args.recover_steps:
        # recovery trains on calibration windows (training text), never on the held-out documents
        windows = calibration_batches(lm.tokenizer, args.calib or None, n=args.n_calib, seq_len=args.calib_seq_len,
                                      seed=args.seed + 1, batch_size=4)
        history = recover_pruned(lm.model, windows, args.recover_steps, lr=args.recover_lr, progress=args.progress)
        summary.update(recover_steps=args.recover_steps, recover_loss_first=history[0]["loss"],
                       recover_loss_last=history[-1]["loss"], bits_per_byte_recovered=bpb())
    report = sparsity_report(lm.model, skip=("lm_head",))
    kernel_ok, kernel_note = semi_structured_support(args.device if args.device != "auto" else None)
    summary.update({"sparsity": report["sparsity"], "2:4": report["2:4"], "sparse_kernel": kernel_ok,
                    "sparse_kernel_note": kernel_note})
    save_compressed(lm, args.out, {"pruning": summary, "source": checkpoint.base_reference(args.model)}, summary)
    figures = ", ".join(f"{k.removeprefix('bits_per_byte_')} {v:.4f}" for k, v in summary.items()
                        if k.startswith("bits_per_byte_") and v is not None)
    log.info(f"pruned {report['sparsity']:.1%} of the block weights; {kernel_note}"
             + (f"; held-out bits/byte: {figures}" if figures else ""))
    return summary


def prune_model(lm, method: str, sparsity: float, calib: CalibrationArgs, scope: str = "layer") -> None:
    if method == "magnitude":
        prune_magnitude(lm.model, sparsity, scope=scope)
    elif method == "2:4":
        prune_n_m(lm.model, 2, 4, batches=calibration(lm, calib), progress=calib.progress)
    else:
        prune_wanda(lm.model, calibration(lm, calib), sparsity=sparsity, progress=calib.progress)


def heldout_text(kb: float) -> list[str]:
    """Whole documents of the default corpus' validation split, up to `kb` kilobytes (the last one cut)."""
    _, val = split_documents(default_corpus())
    heldout, budget = [], int(kb * 1000)
    for _, text in val:
        if budget <= 0:
            break
        heldout.append(text[:budget])
        budget -= len(heldout[-1])
    return heldout


@dataclass
class PruneCurveArgs(CalibrationArgs):
    model: str = arg("smollm2-135m-instruct", "model to prune at each sparsity")
    methods: list[str] = arg(["magnitude", "wanda"], "pruning methods, one curve each",
                             choices=["magnitude", "wanda"])
    sparsities: list[float] = arg([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], "sparsities to measure")
    heldout_kb: float = arg(16.0, "KB of held-out text (the default corpus' validation split)")
    out: str = arg("runs/prune-curve", "folder for curve.md, curve.json and curve.png")


def prune_curve(args: PruneCurveArgs) -> list[dict]:
    """`llmlab prune curve`: held-out bits per byte against sparsity, one curve per method, plotted."""
    bad = [s for s in args.sparsities if not 0 < s < 1]
    if bad or not args.sparsities:
        raise UserError(f"--sparsities {' '.join(map(str, args.sparsities))}: give values between 0 and 1")
    heldout = heldout_text(args.heldout_kb)
    if not heldout:
        raise UserError(f"--heldout-kb {args.heldout_kb}: must be more than 0")
    lm = load(args.model, device=resolve_device(args.device))
    rows = [{"method": "dense", "sparsity": 0.0,
             "bits_per_byte": perplexity(lm, heldout, progress=args.progress)["bits_per_byte"]}]
    for method in args.methods:
        for sparsity in sorted(args.sparsities):
            log.info(f"prune curve: {method} at {sparsity:.0%}")
            lm = load(args.model, device=resolve_device(args.device))
            prune_model(lm, method, sparsity, args)
            rows.append({"method": method, "sparsity": sparsity,
                         "bits_per_byte": perplexity(lm, heldout, progress=args.progress)["bits_per_byte"]})
            write_json_atomic(Path(args.out) / "curve.json", rows)
    write_json_atomic(Path(args.out) / "curve.json", rows)
    plot_curve(rows, Path(args.out) / "curve.png")
    table = "| method | sparsity | bits/byte |\n|---|---|---|\n" + "".join(
        f"| {r['method']} | {r['sparsity']:.0%} | {r['bits_per_byte']:.4f} |\n" for r in rows)
    write_text_atomic(Path(args.out) / "curve.md", f"# Sparsity against held-out bits per byte: {args.model}\n\n"
                      f"{table}\n![bits per byte against sparsity](curve.png)\n")
    log.info(table)
    return rows


def plot_curve(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    dense = rows[0]["bits_per_byte"]
    for method in dict.fromkeys(r["method"] for r in rows[1:]):
        points = [(0.0, dense)] + [(r["sparsity"], r["bits_per_byte"]) for r in rows if r["method"] == method]
        ax.plot([100 * x for x, _ in points], [y for _, y in points], marker="o", label=method)
    ax.set_xlabel("sparsity of the block weights (%)")
    ax.set_ylabel("held-out bits per byte (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


@dataclass
class ExportArgs:
    model: str = arg("smollm2-135m-instruct", "model to export: anything llmlab.load opens (a run folder, a "
                                              "quantised folder, a GGUF, an alias)")
    type: str = arg("q8_0", "GGUF tensor type for the weight matrices",
                    choices=["f32", "f16", "q8_0", "q4_0", "q6_k", "q4_k"])
    out: str = arg("runs/model.gguf", "the .gguf file to write")
    progress: bool = arg(True, "show a progress bar")


def export(args: ExportArgs) -> str:
    """Write a GGUF file llama.cpp loads; `llmlab.load(out)` reopens it."""
    lm = load(args.model)
    if lm.tokenizer is None:
        raise UserError(f"{args.model}: has no tokenizer, and a GGUF file carries one")
    path = export_gguf(lm.model, lm.tokenizer, args.out, qtype=args.type, progress=args.progress)
    log.info(f"wrote {path} ({Path(path).stat().st_size / 2**20:.1f} MB, {args.type})")
    return str(path)


# (name, what to do to a freshly loaded model): the trade-off table's rows
COMPARE_CONFIGS = {
    "float32": {}, "bfloat16": {"dtype": "bfloat16"},
    "int8": {"quantize": "int8"}, "int4-g128": {"quantize": "int4", "group_size": 128},
    "nf4": {"quantize": "nf4"}, "gptq-int4-g128": {"gptq": 4}, "awq-int4-g128": {"awq": 4},
    "w8a8": {"w8a8": True}, "2:4": {"prune": "2:4"}, "wanda-50%": {"prune": "wanda"},
}


@dataclass
class CompareArgs(CalibrationArgs):
    model: str = arg("smollm2-135m-instruct", "model to compress every way")
    configs: list[str] = arg(list(COMPARE_CONFIGS), "rows of the table", choices=list(COMPARE_CONFIGS))
    heldout_kb: float = arg(32.0, "KB of held-out text (the default corpus' validation split) for perplexity")
    mc_rows: int = arg(100, "rows of the built-in multiple-choice task (stdlib-mc) for accuracy")
    decode_tokens: int = arg(32, "tokens generated per decode timing")
    out: str = arg("runs/quantize-compare", "folder for compare.md, compare.json and the plots")


def _compress(lm, name: str, cfg: dict, args: CompareArgs) -> None:
    if cfg.get("dtype"):
        lm.model.to(getattr(torch, cfg["dtype"]))
    elif cfg.get("quantize"):
        quantize_model(lm.model, cfg["quantize"], group_size=cfg.get("group_size"), progress=args.progress)
    elif cfg.get("gptq"):
        gptq_quantize_model(lm.model, calibration(lm, args), bits=cfg["gptq"], group_size=128, progress=args.progress)
    elif cfg.get("awq"):
        awq_quantize_model(lm.model, calibration(lm, args), bits=cfg["awq"], group_size=128, progress=args.progress)
    elif cfg.get("w8a8"):
        stats = collect_model_stats(lm.model, calibration(lm, args), progress=args.progress)
        quantize_model(lm.model, "w8a8", act_stats={n: s.absmax for n, s in stats.items()}, progress=args.progress)
    elif cfg.get("prune") == "2:4":
        prune_n_m(lm.model, 2, 4, batches=calibration(lm, args), progress=args.progress)
    elif cfg.get("prune") == "wanda":
        prune_wanda(lm.model, calibration(lm, args), sparsity=0.5, progress=args.progress)


def _speed(lm, n_new: int) -> dict:
    """Decode tokens/s at batch 1 and 8 and prefill tokens/s (512 tokens), greedy, fastest of two runs."""
    vocab = lm.model.config.vocab_size
    prompt = [(7 * i + 3) % vocab for i in range(16)]
    long_prompt = [(11 * i + 5) % vocab for i in range(min(512, lm.model.config.seq_len - 1))]
    # greedy with no EOS given: every run makes exactly n_new tokens
    b1 = best_seconds(lambda: generate(lm.model, prompt, n_new, temperature=0.0), 2)
    b8 = best_seconds(lambda: generate_batch(lm.model, [prompt] * 8, n_new, temperature=0.0), 2)
    prefill = best_seconds(lambda: generate(lm.model, long_prompt, 1, temperature=0.0), 2)
    return {"decode_b1_tps": n_new / b1, "decode_b8_tps": 8 * n_new / b8, "prefill_tps": len(long_prompt) / prefill}


def compare(args: CompareArgs) -> list[dict]:
    """`llmlab quantize compare`: every method on one model: size, perplexity, accuracy and speed, tabulated."""
    heldout = heldout_text(args.heldout_kb)
    rows = []
    for name in args.configs:
        log.info(f"quantize compare: {name}")
        seed_everything(args.seed)
        lm = load(args.model, device=resolve_device(args.device))
        _compress(lm, name, COMPARE_CONFIGS[name], args)
        ppl = perplexity(lm, heldout, progress=args.progress)
        mc, _ = evaluate(lm, resolve_task("stdlib-mc"), limit=args.mc_rows, progress=args.progress)
        disk = sum(t.numel() * t.element_size() for t in checkpoint.model_tensors(lm.model).values())
        rows.append({"config": name, "disk_mb": disk / 2**20, "memory_mb": model_size_bytes(lm.model) / 2**20,
                     "bits_per_byte": ppl["bits_per_byte"], "word_perplexity": ppl["word_perplexity"],
                     "token_perplexity": ppl["token_perplexity"], "mc_acc_norm": mc["acc_norm"],
                     "mc_acc_norm_stderr": mc["acc_norm_stderr"], **_speed(lm, args.decode_tokens)})
        write_json_atomic(Path(args.out) / "compare.json", rows)  # kept as it grows: a long run loses nothing
    base = rows[0]
    for r in rows:
        r["ppl_change_pct"] = 100 * (r["token_perplexity"] / base["token_perplexity"] - 1)
        r["decode_b1_speedup"] = r["decode_b1_tps"] / base["decode_b1_tps"]
    write_json_atomic(Path(args.out) / "compare.json", rows)
    table = compare_table(rows)
    plot_compare(rows, Path(args.out) / "compare.png")
    write_text_atomic(Path(args.out) / "compare.md", f"# Compression trade-offs: {args.model}\n\n{table}\n"
                      "![size, perplexity and speed](compare.png)\n")
    log.info(table)
    return rows


COLUMNS = [("config", "config", "{}"), ("disk MB", "disk_mb", "{:.1f}"), ("memory MB", "memory_mb", "{:.1f}"),
           ("bits/byte", "bits_per_byte", "{:.4f}"), ("token ppl", "token_perplexity", "{:.3f}"),
           ("ppl change", "ppl_change_pct", "{:+.2f}%"), ("MC acc_norm", "mc_acc_norm", "{:.3f}"),
           ("decode b1 tok/s", "decode_b1_tps", "{:.1f}"), ("b1 speedup", "decode_b1_speedup", "{:.2f}x"),
           ("decode b8 tok/s", "decode_b8_tps", "{:.1f}"), ("prefill tok/s", "prefill_tps", "{:.0f}")]


def compare_table(rows: list[dict]) -> str:
    head = "| " + " | ".join(c for c, _, _ in COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    return head + "".join("| " + " | ".join(f.format(r[k]) for _, k, f in COLUMNS) + " |\n" for r in rows)


def plot_compare(rows: list[dict], path: Path) -> None:
    """Perplexity against size in memory, and decode speed, one point/bar per configuration."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in rows:
        ax1.scatter(r["memory_mb"], r["token_perplexity"])
        ax1.annotate(r["config"], (r["memory_mb"], r["token_perplexity"]), fontsize=8)
    ax1.set_xlabel("size in memory (MB)")
    ax1.set_ylabel("token perplexity on held-out text")
    ax1.grid(alpha=0.3)
    ax2.bar(range(len(rows)), [r["decode_b1_tps"] for r in rows], color=[f"C{i}" for i in range(len(rows))])
    ax2.set_xticks(range(len(rows)), [r["config"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax2.set_ylabel("decode tokens/s, batch 1")
    ax2.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
