"""`llmlab eval`: score one or more models on tasks; results.json, per-sample JSONL and a report with plots.

    llmlab eval --model smollm2-135m-instruct --tasks stdlib-mc,math --limit 50 --out runs/eval
    llmlab eval --model runs/a runs/b --tasks my_questions.jsonl notes.txt my_task.yaml --out runs/eval-ab
    llmlab eval --model runs/sft --tasks python --allow-code-execution --out runs/eval-code

A task is a built-in name, a .jsonl of multiple-choice rows, a .txt to measure perplexity on, or a YAML/JSON
task file (see `llmlab.eval.tasks`). One model writes `<out>/results.json` (task -> metrics, by lm-eval's
names) and `<out>/samples/<task>.jsonl`; several models write the same into `<out>/<model>/` each, and the
report compares them side by side, against the checkpoint step when the models are checkpoints of one run.
"""

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from llmlab.common import checkpoint, log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device, resolve_dtype
from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic, write_text_atomic
from llmlab.eval.judge import compare_answers, summarize_comparisons
from llmlab.eval.lite import lite_eval, plot_lite, score_matrix
from llmlab.eval.report import main_metric, write_report
from llmlab.eval.runner import evaluate
from llmlab.eval.tasks import resolve_task
from llmlab.infer.api import EndpointChat, LocalChat
from llmlab.loading import load


@dataclass
class EvalArgs:
    model: list[str] = arg(["smollm2-135m-instruct"], "models to score: anything llmlab.load opens (several: a "
                                                       "side-by-side table)")
    tasks: list[str] = arg(["stdlib-mc"], "built-in names, .jsonl (multiple choice), .txt (perplexity) or "
                                          ".yaml/.json task files; comma-separated or repeated")
    out: str = arg("runs/eval", "folder for results.json, samples/ and report.md")
    limit: int | None = arg(None, "score at most this many rows per task (a seeded random subset)")
    batch_size: int = arg(16, "rows scored together")
    seed: int = arg(0, "seed for the row subset and for sampling")
    allow_code_execution: bool = arg(False, "run programs the model writes (code tasks) in llmlab's sandbox; off by "
                                            "default because generated code is untrusted")
    judge: str | None = arg(None, "grade generated answers with this model too: anything llmlab.load opens, or "
                                  "openai:MODEL for an OpenAI-compatible endpoint")
    judge_base_url: str | None = arg(None, "endpoint for openai:MODEL (default: $OPENAI_BASE_URL)")
    judge_api_key_env: str = arg("OPENAI_API_KEY", "environment variable holding the endpoint's key")
    judge_max_new_tokens: int = arg(128, "most tokens of each judge reply (its verdict comes last)")
    device: str = arg("cpu", "cpu, cuda or auto")
    dtype: str = arg("float32", "float32, bfloat16 or float16")
    progress: bool = arg(True, "show progress bars")


def model_label(source: str, taken: set[str]) -> str:
    """A short unique name for a model: "runs/a/checkpoint" -> "a", an alias stays as it is."""
    path = Path(source)
    label = path.parent.name if path.name == "checkpoint" and path.parent.name else (path.stem or source)
    name, i = label, 2
    while name in taken:
        name, i = f"{label}-{i}", i + 1
    taken.add(name)
    return name


def checkpoint_step(source: str) -> int | None:
    """The training step of an llmlab checkpoint (or run folder), for plotting against; None otherwise."""
    for folder in (Path(source), Path(source) / "checkpoint"):
        if folder.is_dir() and checkpoint.is_checkpoint(folder):
            step = checkpoint.read_meta(folder).get("step")
            return step if isinstance(step, int) else None
    return None


def make_judge(args: EvalArgs):
    if args.judge is None:
        return None
    if args.judge.startswith("openai:"):
        return EndpointChat(args.judge.removeprefix("openai:"), base_url=args.judge_base_url,
                            api_key=os.environ.get(args.judge_api_key_env))
    return LocalChat(load(args.judge, device=resolve_device(args.device)))


def run(args: EvalArgs) -> dict:
    """Score every model on every task; returns {model label: {task: metrics}}."""
    task_names = [t.strip() for item in args.tasks for t in item.split(",") if t.strip()]
    if not task_names:
        raise UserError("--tasks: no task given; name a built-in task or a task file")
    specs = [resolve_task(t) for t in task_names]  # every task checked before any model loads
    if len({s.name for s in specs}) < len(specs):
        raise UserError(f"--tasks {','.join(task_names)}: two tasks share a name; rename one task file")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit {args.limit}: must be at least 1")
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    judge = make_judge(args)
    out = Path(args.out)
    taken: set[str] = set()
    labels = [model_label(m, taken) for m in args.model]
    results, samples, steps, timing = {}, {}, {}, {}
    for source, label in zip(args.model, labels, strict=True):
        lm = load(source, device=device, dtype=dtype)
        folder = out if len(args.model) == 1 else out / label
        results[label], samples[label], steps[label] = {}, {}, checkpoint_step(source)
        for spec in specs:
            log.info(f"eval: {label} on {spec.name} ({spec.kind})")
            t0 = time.perf_counter()
            metrics, records = evaluate(lm, spec, limit=args.limit, batch_size=args.batch_size, seed=args.seed,
                                        progress=args.progress, allow_code_execution=args.allow_code_execution,
                                        judge=judge, judge_max_new_tokens=args.judge_max_new_tokens)
            timing[f"{label}/{spec.name}"] = time.perf_counter() - t0
            results[label][spec.name], samples[label][spec.name] = metrics, records
            write_text_atomic(folder / "samples" / f"{spec.name}.jsonl",
                              "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            main = main_metric(metrics)
            log.info(f"eval: {label} {spec.name}: " + (f"{main} {metrics[main]:.4g}" if main else "done"))
        write_json_atomic(folder / "results.json", results[label])
    pairwise = judge_pairs(judge, labels, samples, args.judge_max_new_tokens, args.progress)
    if pairwise:
        write_json_atomic(out / "pairwise.json", pairwise)
    notes = [f"Models: {', '.join(f'`{m}`' for m in args.model)}. Tasks: {', '.join(s.name for s in specs)}."
             + (f" At most {args.limit} rows per task." if args.limit else ""),
             "", "Seconds per model and task: " + ", ".join(f"{k} {v:.1f}" for k, v in timing.items()) + "."]
    notes += judge_notes(results) + pairwise_notes(pairwise, labels)
    write_json_atomic(out / "run.json", {"models": dict(zip(labels, args.model, strict=True)), "steps": steps,
                                         "tasks": task_names, "seconds": timing, "limit": args.limit,
                                         "seed": args.seed})
    report = write_report(out, results, samples, steps, notes)
    log.info(f"eval: results in {out}; report {report}")
    return results


def judge_pairs(judge, labels: list[str], samples: dict, max_new_tokens: int, progress: bool) -> dict:
    """With a judge and two models: each generation task's answers compared pairwise, in both orders."""
    if judge is None or len(labels) != 2:
        return {}
    a, b = labels
    out = {}
    for task, recs in samples[a].items():
        other = samples[b].get(task, [])
        if not recs or "answer" not in recs[0] or len(other) != len(recs) or "passed" in recs[0]:
            continue
        comparisons = compare_answers(judge, [r["prompt"] for r in recs], [r["answer"] for r in recs],
                                      [r["answer"] for r in other], references=[r.get("reference") for r in recs],
                                      max_new_tokens=max_new_tokens, progress=progress)
        out[task] = summarize_comparisons(comparisons)
    return out


def judge_notes(results: dict) -> list[str]:
    """Reference-free against reference-based: how the judge's grades rank answers next to the task's metric."""
    rows = [(label, task, m["judge_score"], m["judge_agreement"]) for label, per_task in results.items()
            for task, m in per_task.items() if "judge_agreement" in m]
    if not rows:
        return []
    lines = ["", "## Judge grades against the reference-based metric (same answers)", "",
             "| model | task | mean grade (1-10) | metric | Spearman [95% CI] | Kendall tau-b [95% CI] | n |",
             "|---|---|---|---|---|---|---|"]
    for label, task, grade, a in rows:
        cells = [f"{a[k]['value']:.2f} [{a[k]['low']:.2f}, {a[k]['high']:.2f}]" for k in ("spearman", "kendall")]
        lines.append(f"| {label} | {task} | {grade:.2f} | {a['metric']} | {cells[0]} | {cells[1]} | {a['n']} |")
    return lines


def pairwise_notes(pairwise: dict, labels: list[str]) -> list[str]:
    if not pairwise:
        return []
    lines = ["", f"## Judge, pairwise: {labels[0]} (A) against {labels[1]} (B), both orders", "",
             "| task | A wins | B wins | ties | unparseable | position bias |", "|---|---|---|---|---|---|"]
    for task, s in pairwise.items():
        lines.append(f"| {task} | {s['a_wins']} | {s['b_wins']} | {s['ties']} | {s['unparseable']} | "
                     f"{s['position_bias']:.2f} |")
    return lines


@dataclass
class LiteArgs:
    run: str = arg("runs/eval", "an `llmlab eval` output folder with three or more models scored on the same tasks")
    sizes: list[int] = arg([5, 10, 20, 50, 100, 200], "subset sizes to try (those above the item count are dropped)")
    holdout: bool = arg(False, "choose items on half the models and measure agreement on the others "
                               "(the honest figure for the variance and discrimination methods)")
    draws: int = arg(200, "random subsets drawn per size")
    seed: int = arg(0, "seed for the random subsets")


def item_score(record: dict) -> float | None:
    """One sample's score for lite-eval: right or wrong, an answer metric, or minus bits per byte."""
    for key in ("correct_norm", "correct", "passed", "exact_match", "math", "f1"):
        if key in record:
            return float(record[key])
    return -record["bits_per_byte"] if "bits_per_byte" in record else None


def lite(args: LiteArgs) -> list[dict]:
    """`llmlab eval lite`: how well small subsets of the scored items rank the models like all items do."""
    run_file = Path(args.run) / "run.json"
    if not run_file.is_file():
        raise UserError(f"{args.run}: no run.json; give the --out folder of an `llmlab eval` run")
    meta = json.loads(run_file.read_text())
    labels, tasks = list(meta["models"]), [Path(t).stem if Path(t).suffix else t for t in meta["tasks"]]
    if len(labels) < 3:
        raise UserError(f"{args.run}: lite-eval ranks models, so it needs at least 3 (this run has {len(labels)})")
    per_model: dict[str, dict[str, float]] = {}
    for label in labels:
        per_model[label] = {}
        for task in tasks:
            path = Path(args.run) / label / "samples" / f"{task}.jsonl"
            if not path.is_file():
                raise UserError(f"{path}: missing; rerun `llmlab eval` for every model on every task")
            for i, line in enumerate(path.read_text().splitlines()):
                score = item_score(json.loads(line))
                if score is not None:
                    per_model[label][f"{task}/{i}"] = score
    models, items, scores = score_matrix(per_model)
    sizes = [k for k in args.sizes if k <= len(items)] or [len(items)]
    fit = list(range(0, len(models), 2)) if args.holdout else None
    rows = lite_eval(scores, sizes, labels=[i.split("/")[0] for i in items], n_draws=args.draws, seed=args.seed,
                     fit_models=fit)
    out = Path(args.run)
    write_json_atomic(out / "lite.json", rows)
    plot_lite(rows, out / "lite.png", title=f"lite evaluation: {len(models)} models, {len(items)} items")
    table = ["| method | items | time saved | Spearman | Kendall |", "|---|---|---|---|---|"]
    for r in rows:
        interval = f" [{r['spearman_low']:.2f}, {r['spearman_high']:.2f}]" if r["spearman_low"] is not None else ""
        table.append(f"| {r['method']} | {r['k']} | {r['time_saved']:.0%} | {r['spearman']:.3f}{interval} | "
                     f"{r['kendall']:.3f} |")
    write_text_atomic(out / "lite.md", "# Lite evaluation\n\n" + "\n".join(table) + "\n\n![subset size against "
                      "rank correlation](lite.png)\n")
    log.info("\n".join(table))
    return rows
