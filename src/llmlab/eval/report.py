"""The evaluation report: a markdown page and the plots a person would rather look at than read.

`write_report(out, results, samples, steps)` writes `report.md` beside three kinds of PNG:

    scores.png         each task's main metric per model, with 95% intervals (1.96 standard errors)
    by_step.png        each task's main metric against the checkpoint step, when the models are checkpoints
    reliability.png    multiple choice: how often the model is right against how sure it was (a calibrated
                       model lies on the diagonal), one curve per model

`results` maps a model label to {task: metrics}; `samples` maps a label to {task: per-sample records}.
This file draws and writes; it scores nothing.
"""

import math
from pathlib import Path
from typing import Any

from llmlab.common.io import atomic_write, write_text_atomic

# the metric a task is summarised by, in order of preference
MAIN_METRICS = ("acc_norm", "acc", "pass@1", "exact_match", "math", "f1", "rouge", "rougeL", "bleu", "chrf",
                "bits_per_byte", "word_perplexity")
LOWER_IS_BETTER = {"bits_per_byte", "word_perplexity", "byte_perplexity", "token_perplexity"}


def main_metric(metrics: dict[str, Any]) -> str | None:
    """The metric a task is summarised by: {"acc": .5, "acc_norm": .6} -> "acc_norm"."""
    return next((m for m in MAIN_METRICS if isinstance(metrics.get(m), (int, float))), None)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def plot_scores(results: dict[str, dict[str, dict]], path: Path) -> bool:
    """Grouped bars: one group per task, one bar per model, whiskers at +-1.96 standard errors."""
    tasks = sorted({t for per_task in results.values() for t in per_task})
    rows = [(t, main_metric(next(r[t] for r in results.values() if t in r))) for t in tasks]
    rows = [(t, m) for t, m in rows if m]
    if not rows:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(rows), figsize=(2.2 + 1.6 * len(rows) * max(1, len(results) / 2), 3.6),
                             squeeze=False)
    for ax, (task, metric) in zip(axes[0], rows, strict=True):
        labels = [label for label in results if task in results[label]]
        values = [results[label][task].get(metric, math.nan) for label in labels]
        errors = [1.96 * (results[label][task].get(f"{metric}_stderr") or 0.0) for label in labels]
        ax.bar(range(len(labels)), values, yerr=errors, capsize=4, color=[f"C{i}" for i in range(len(labels))])
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{task}\n{metric}{' (lower is better)' if metric in LOWER_IS_BETTER else ''}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    return True


def plot_by_step(results: dict[str, dict[str, dict]], steps: dict[str, int | None], path: Path) -> bool:
    """Main metric against checkpoint step, one line per task (only models with a known step)."""
    stepped = sorted((s, label) for label, s in steps.items() if s is not None)
    if len(stepped) < 2:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    tasks = sorted({t for _, label in stepped for t in results[label]})
    for task in tasks:
        metric = main_metric(next(results[label][task] for _, label in stepped if task in results[label]))
        points = [(s, results[label][task][metric]) for s, label in stepped if task in results[label] and metric]
        if points:
            ax.plot(*zip(*points, strict=True), "o-", label=f"{task} ({metric})")
    ax.set_xlabel("checkpoint step")
    ax.set_ylabel("metric")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def reliability(records: list[dict], bins: int = 10) -> list[tuple[float, float, int]]:
    """(mean confidence, accuracy, count) per confidence bin, from multiple-choice records holding the
    probability of the chosen answer (`confidence`) and whether it was right (`correct`)."""
    groups: list[list[dict]] = [[] for _ in range(bins)]
    for r in records:
        groups[min(bins - 1, int(r["confidence"] * bins))].append(r)
    return [(sum(r["confidence"] for r in g) / len(g), sum(bool(r["correct"]) for r in g) / len(g), len(g))
            for g in groups if g]


def plot_reliability(samples: dict[str, dict[str, list[dict]]], path: Path) -> bool:
    """Accuracy against confidence over every multiple-choice sample of each model."""
    curves = {label: reliability([r for recs in per_task.values() for r in recs if "confidence" in r])
              for label, per_task in samples.items()}
    curves = {label: c for label, c in curves.items() if c}
    if not curves:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, label="calibrated")
    for label, points in curves.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=label)
    ax.set_xlabel("confidence (probability of the chosen answer)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def _fmt(value: Any, stderr: Any = None) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    text = f"{value:.4g}"
    return text + (f" ± {stderr:.2g}" if isinstance(stderr, (int, float)) and stderr == stderr else "")


def results_table(results: dict[str, dict[str, dict]]) -> str:
    """Markdown: one row per (task, metric), one column per model."""
    labels = list(results)
    lines = ["| task | metric | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    tasks = sorted({t for per_task in results.values() for t in per_task})
    for task in tasks:
        metrics = []
        for label in labels:
            for m, v in results[label].get(task, {}).items():
                if isinstance(v, (int, float)) and not m.endswith("_stderr") and m != "n" and m not in metrics:
                    metrics.append(m)
        for m in metrics:
            cells = [_fmt(results[label].get(task, {}).get(m), results[label].get(task, {}).get(f"{m}_stderr"))
                     for label in labels]
            lines.append(f"| {task} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(out: str | Path, results: dict[str, dict[str, dict]], samples: dict[str, dict[str, list[dict]]],
                 steps: dict[str, int | None] | None = None, notes: list[str] | None = None) -> Path:
    """Write report.md and its plots into `out`; returns the report's path."""
    out = Path(out)
    lines = ["# llmlab evaluation report", "", *(notes or []), "", results_table(results)]
    if plot_scores(results, out / "scores.png"):
        lines += ["![main metric per task, 95% intervals](scores.png)", ""]
    if plot_by_step(results, steps or {}, out / "by_step.png"):
        lines += ["![metric against checkpoint step](by_step.png)", ""]
    if plot_reliability(samples, out / "reliability.png"):
        lines += ["## Calibration (multiple choice)", "",
                  "How often the chosen answer is right, against the probability the model gave it "
                  "(softmax over the choices' log-likelihoods).", "", "![reliability diagram](reliability.png)", ""]
    write_text_atomic(out / "report.md", "\n".join(lines))
    return out / "report.md"
