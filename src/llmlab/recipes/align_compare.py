"""`llmlab align compare`: base, SFT, GRPO, CoT SFT and CoT SFT + GRPO on the same held-out questions.

    llmlab align compare --model smollm2-135m-instruct --out runs/align-compare

Every method sees the same `--examples` training questions of the built-in arithmetic and conversion
tasks once (`llmlab.data.reasoning.split_tasks`; held-out questions never train), and every model is
scored the same way: greedy answers to the same `--eval-examples` held-out questions, checked by
`llmlab.align.rewards.answer_is_correct` (numbers compared as numbers, the answer after `</think>`),
with the tokens each answer took. The stages are the ordinary commands, run one after another as
child processes (each one's command line and log are in `--out`, so any stage can be rerun by hand):

    sft         llmlab finetune    on the direct answers ("Answer with the result only.")
    grpo        llmlab align grpo  from the base, rewards `--rewards`; scores the base (before) and itself
    cot-sft     llmlab finetune    on worked steps in <think>...</think> then the answer; then llmlab merge
    cot-grpo    llmlab align grpo  --think from the merged CoT SFT model; scores CoT SFT and itself

SFT takes the questions in batches of four, unpacked, so its `--examples` are exactly GRPO's
(steps x prompts per step). A stage whose summary.json exists is skipped, and one cut off resumes, so
rerunning the same command finishes a run. Writes report.md (the table and each command), compare.json
and compare.png (accuracy, tokens per answer, both GRPO reward curves).
"""

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlab.align.grpo import answer_accuracy, encode_prompts
from llmlab.align.rewards import REWARDS
from llmlab.common import checkpoint, log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device
from llmlab.common.errors import UserError
from llmlab.common.io import atomic_write, write_json_atomic, write_text_atomic
from llmlab.data.reasoning import split_tasks, task_prompts, to_cot, write_cot_jsonl
from llmlab.infer.api import end_of_turn_ids
from llmlab.loading import load
from llmlab.train.plot import running_mean

STAGES = ("sft", "grpo", "cot-sft", "cot-grpo")
SFT_BATCH = 4  # questions per SFT step, unpacked: SFT steps = examples / 4


@dataclass
class CompareArgs:
    model: str = arg("smollm2-135m-instruct", "base model: alias, GGUF file, HF folder or llmlab checkpoint")
    out: str = arg("runs/align-compare", "folder for every stage, report.md, compare.json and compare.png")
    stages: list[str] = arg(list(STAGES), "stages to run (the base is always scored, by the grpo stage)",
                            choices=list(STAGES))
    examples: int = arg(96, "training questions every method sees once (GRPO: steps x prompts per step)")
    eval_examples: int = arg(64, "held-out questions every model answers (greedy)")
    prompts_per_step: int = arg(2, "GRPO: questions per step")
    group_size: int = arg(8, "GRPO: completions per question")
    max_new_tokens: int = arg(32, "direct answers: tokens per completion and per held-out answer")
    cot_max_new_tokens: int = arg(80, "CoT answers: tokens per completion and per held-out answer")
    # correctness alone for direct answers: `terse` at weight 0.5 taught SmolLM2-135M short wrong answers
    # ("9 grams") within 20 steps; a correct answer already has to end with the number
    rewards: list[str] = arg(["correct"], "GRPO rewards for direct answers", choices=list(REWARDS))
    reward_weights: list[float] = arg([1.0], "one weight per direct reward")
    cot_rewards: list[str] = arg(["correct", "format"], "GRPO rewards for CoT answers", choices=list(REWARDS))
    cot_reward_weights: list[float] = arg([1.0, 0.2], "one weight per CoT reward (format: small, it is easy)")
    temperature: float = arg(1.0, "GRPO: sampling temperature of the rollouts")
    lr: float = arg(5e-4, "GRPO: peak learning rate (LoRA)")
    sft_lr: float = arg(2e-3, "SFT: peak learning rate (LoRA, the fine-tuning default)")
    rank: int = arg(16, "LoRA rank of every stage (alpha is twice the rank)")
    device: str = arg("auto", "cpu, cuda, cuda:N or auto")
    seed: int = arg(0, "seed of the questions, the adapters and the rollouts")
    progress: bool = arg(False, "show each stage's progress bar (its log in --out has the rest)")


def _lora(args: CompareArgs) -> list[str]:
    return ["--method", "lora", "--rank", str(args.rank), "--alpha", str(2.0 * args.rank), "--seed", str(args.seed),
            "--device", args.device] + ([] if args.progress else ["--no-progress"])


def _sft_command(args: CompareArgs, data: Path, out: Path) -> list[str]:
    return ["finetune", "--model", args.model, "--data", str(data), "--out", str(out), "--batch-size",
            str(SFT_BATCH), "--no-packing", "--max-steps", str(max(1, args.examples // SFT_BATCH)),
            "--warmup-steps", "2", "--lr", str(args.sft_lr), "--val-fraction", "0", "--eval-examples", "0",
            *_lora(args)]


def _grpo_command(args: CompareArgs, model: str, out: Path, think: bool) -> list[str]:
    rewards, weights = (args.cot_rewards, args.cot_reward_weights) if think else (args.rewards, args.reward_weights)
    steps = max(1, args.examples // args.prompts_per_step)
    return ["align", "grpo", "--model", model, "--data", "tasks", "--out", str(out), "--n-train", str(args.examples),
            "--eval-examples", str(args.eval_examples), "--max-steps", str(steps),
            "--prompts-per-step", str(args.prompts_per_step), "--group-size", str(args.group_size),
            "--max-new-tokens", str(args.cot_max_new_tokens if think else args.max_new_tokens),
            "--temperature", str(args.temperature), "--lr", str(args.lr), "--rewards", *rewards,
            "--reward-weights", *map(str, weights), *(["--think"] if think else []), *_lora(args)]


def run_stage(name: str, argv: list[str], out: Path, log_file: Path) -> dict[str, Any]:
    """Run `llmlab ARGV` in a child process, output to `log_file`; skip it when `out` holds a finished run, resume
    it when `out` holds a cut-off one. Returns {"command", "wall_s"} (wall_s None when skipped)."""
    command = " ".join(shlex.quote(a) for a in ["llmlab", *argv])
    if (out / "summary.json").is_file() or (name == "merge" and checkpoint.is_checkpoint(out)):
        log.info(f"align compare: {name}: done before, kept ({out})")
        return {"command": command, "wall_s": None}
    if out.is_dir() and any(out.iterdir()) and name != "merge":
        argv = [*argv, "--resume"]
    log.info(f"align compare: {name}: {command}")
    t0 = time.perf_counter()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a", encoding="utf-8") as f:
        rc = subprocess.run([sys.executable, "-m", "llmlab", *argv], stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        raise UserError(f"align compare: stage {name} failed (exit {rc}): {' | '.join(tail)}; full log in {log_file}")
    return {"command": command, "wall_s": time.perf_counter() - t0}


def _summary(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "summary.json").read_text(encoding="utf-8"))


def _row(name: str, accuracy, tokens, finished, examples: int, train_s, cpu_step, stage: dict | None) -> dict:
    return {"model": name, "accuracy": accuracy, "tokens_per_answer": tokens, "finished": finished,
            "examples": examples, "train_s": train_s, "cpu_per_step_s": cpu_step,
            "stage_wall_s": None if stage is None else stage["wall_s"]}


def score_folder(args: CompareArgs, folder: Path, think: bool) -> dict[str, Any]:
    """Held-out answer scores of a model folder, on the questions and token budget the GRPO stages use."""
    lm = load(folder)
    _, held = task_prompts(args.examples, args.eval_examples, args.seed, think)
    tokens = args.cot_max_new_tokens if think else args.max_new_tokens
    tasks = encode_prompts(held, lm.tokenizer, lm.model.config.seq_len, tokens)
    return answer_accuracy(lm.model.to(resolve_device(args.device)), lm.tokenizer, tasks, tokens,
                           end_of_turn_ids(lm.tokenizer))


def compare(args: CompareArgs) -> list[dict]:
    """Run the stages in `args.stages`, score every model on the same held-out questions, write the report."""
    if args.examples < max(SFT_BATCH, args.prompts_per_step) or args.eval_examples < 1:
        raise UserError(f"--examples must be at least {max(SFT_BATCH, args.prompts_per_step)} and --eval-examples "
                        "at least 1")
    out = Path(args.out)
    train, _ = split_tasks(args.examples, args.eval_examples, args.seed)
    data = out / "data"
    write_text_atomic(data / "direct.jsonl", "".join(json.dumps({"messages": t["messages"]}) + "\n" for t in train))
    write_cot_jsonl([to_cot(t) for t in train], data / "cot.jsonl")
    stages: dict[str, dict] = {}
    if "sft" in args.stages:
        stages["sft"] = run_stage("sft", _sft_command(args, data / "direct.jsonl", out / "sft"), out / "sft",
                                  out / "sft.log")
    if "grpo" in args.stages:
        stages["grpo"] = run_stage("grpo", _grpo_command(args, args.model, out / "grpo", False), out / "grpo",
                                   out / "grpo.log")
    if "cot-sft" in args.stages:
        stages["cot-sft"] = run_stage("cot-sft", _sft_command(args, data / "cot.jsonl", out / "cot-sft"),
                                      out / "cot-sft", out / "cot-sft.log")
        stages["merge"] = run_stage("merge", ["merge", str(out / "cot-sft"), "--out", str(out / "cot-sft-merged")],
                                    out / "cot-sft-merged", out / "cot-sft.log")
    if "cot-grpo" in args.stages:
        if not checkpoint.is_checkpoint(out / "cot-sft-merged"):
            raise UserError(f"align compare: cot-grpo starts from {out / 'cot-sft-merged'}, which is missing; "
                            "add the cot-sft stage")
        stages["cot-grpo"] = run_stage("cot-grpo", _grpo_command(args, str(out / "cot-sft-merged"), out / "cot-grpo",
                                                                 True), out / "cot-grpo", out / "cot-grpo.log")
    rows = _table_rows(args, out, stages)
    write_json_atomic(out / "compare.json", {"rows": rows, "commands": {k: v["command"] for k, v in stages.items()}})
    plot_compare(rows, out, out / "compare.png")
    write_text_atomic(out / "report.md", report(args, rows, stages))
    log.info(table(rows, args))
    return rows


def _table_rows(args: CompareArgs, out: Path, stages: dict[str, dict]) -> list[dict]:
    rows = []
    grpo = _summary(out / "grpo") if "grpo" in stages else None
    if grpo:
        rows.append(_row("base", grpo["accuracy_before"], grpo["tokens_per_answer_before"], grpo["finished_before"],
                         0, None, None, None))
    if "sft" in stages:
        s, scored = _summary(out / "sft"), score_folder(args, out / "sft", think=False)
        rows.append(_row("SFT", scored["accuracy"], scored["tokens_per_answer"], scored["finished"],
                         s["steps"] * SFT_BATCH, s["time_per_step_s"] * s["steps"], None, stages["sft"]))
    if grpo:
        rows.append(_row("GRPO", grpo["accuracy_after"], grpo["tokens_per_answer_after"], grpo["finished_after"],
                         grpo["examples_seen"], grpo["train_s"], grpo["cpu_per_step_s"], stages["grpo"]))
    cot = _summary(out / "cot-grpo") if "cot-grpo" in stages else None
    if "cot-sft" in stages:
        s = _summary(out / "cot-sft")
        scored = ({"accuracy": cot["accuracy_before"], "tokens_per_answer": cot["tokens_per_answer_before"],
                   "finished": cot["finished_before"]} if cot else score_folder(args, out / "cot-sft", think=True))
        rows.append(_row("CoT SFT", scored["accuracy"], scored["tokens_per_answer"], scored["finished"],
                         s["steps"] * SFT_BATCH, s["time_per_step_s"] * s["steps"], None, stages["cot-sft"]))
    if cot:
        rows.append(_row("CoT SFT + GRPO", cot["accuracy_after"], cot["tokens_per_answer_after"], cot["finished_after"],
                         cot["examples_seen"], cot["train_s"], cot["cpu_per_step_s"], stages["cot-grpo"]))
    return rows


COLUMNS = [("model", "model", "{}"), ("held-out accuracy", "accuracy", "{:.3f}"),
           ("tokens per answer", "tokens_per_answer", "{:.1f}"), ("finished", "finished", "{:.2f}"),
           ("training questions", "examples", "{}"), ("training s", "train_s", "{:.0f}"),
           ("CPU s/step", "cpu_per_step_s", "{:.1f}"), ("stage wall s", "stage_wall_s", "{:.0f}")]


def table(rows: list[dict], args: CompareArgs) -> str:
    """Markdown table, one row per model."""
    head = "| " + " | ".join(c for c, _, _ in COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    cell = lambda r, key, fmt: fmt.format(r[key]) if r.get(key) is not None else "-"  # noqa: E731
    return head + "".join("| " + " | ".join(cell(r, k, f) for _, k, f in COLUMNS) + " |\n" for r in rows)


def report(args: CompareArgs, rows: list[dict], stages: dict[str, dict]) -> str:
    lines = [f"# Alignment compare: {args.model}", "",
             f"{args.eval_examples} held-out questions (arithmetic and conversion), greedy, at most "
             f"{args.max_new_tokens} tokens (direct) or {args.cot_max_new_tokens} (CoT); every method saw the same "
             f"{args.examples} training questions once. GRPO: {args.prompts_per_step} questions x {args.group_size} "
             f"completions per step, rewards {args.rewards} x {args.reward_weights} (CoT: {args.cot_rewards} x "
             f"{args.cot_reward_weights}), LoRA rank {args.rank}. 'finished': share of answers that ended within the "
             "token budget. 'training s' is wall-clock; on a shared machine CPU s/step is the steadier figure.", "",
             table(rows, args), "![compare](compare.png)", "", "## Commands", ""]
    lines += [f"- {name}: `{s['command']}`" + ("" if s["wall_s"] is None else f" ({s['wall_s']:.0f} s)")
              for name, s in stages.items()]
    return "\n".join(lines) + "\n"


def plot_compare(rows: list[dict], out: Path, path: Path) -> None:
    """Accuracy and tokens per answer per model, and the GRPO reward curves (running mean)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    names = [r["model"] for r in rows]
    for ax, key, title in ((axes[0], "accuracy", "held-out accuracy"), (axes[1], "tokens_per_answer",
                                                                         "tokens per answer")):
        ax.bar(names, [r[key] or 0.0 for r in rows], color="tab:blue")
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    for stage in ("grpo", "cot-grpo"):
        history = out / stage / "history.json"
        if history.is_file():
            h = json.loads(history.read_text(encoding="utf-8"))
            w = max(1, len(h) // 10)
            values = [r["reward"] for r in h]
            axes[2].plot([r["step"] for r in h], running_mean(values, w), label=f"{stage} (mean of {w})")
    axes[2].set_title("GRPO reward")
    axes[2].set_xlabel("step")
    axes[2].grid(alpha=0.3)
    if axes[2].lines:
        axes[2].legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
