"""`llmlab align grpo|ppo|budget|reasoning`: RL from rewards, test-time budget forcing, reasoning traces.

    llmlab align grpo --model smollm2-135m-instruct --data tasks --method lora --max-steps 60 --out runs/grpo
    llmlab align ppo --model smollm2-135m-instruct --data tasks --rewards correct --out runs/ppo
    llmlab align budget --model runs/cot-sft --budgets 0 8 16 32 64 --out runs/budget
    llmlab align reasoning --out data/cot.jsonl

`grpo` and `ppo` load the base (`llmlab.load`), read prompts with reference answers (the built-in
arithmetic and conversion tasks, or a .jsonl of {"prompt" or "messages", "answer"}), score held-out
accuracy by greedy decoding, apply the method (`llmlab.finetune.methods`), run `llmlab.align.grpo` /
`llmlab.align.ppo` steps with a warmup-cosine learning rate, score again and write `--out` as
fine-tuning does (full: the checkpoint itself; lora/qlora: checkpoint/ plus PEFT's adapter files), with
summary.json, history.json, curves.png and report.md. Rollout seeds come from (seed, step), so a run
resumed from its last checkpoint continues exactly. A non-finite loss or reward, or a reward function
that raises (unless skipped), stops the run with the last checkpoint intact.
"""

import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from llmlab.align.grpo import GRPOSettings, answer_accuracy, encode_prompts, grpo_step, reference_fn
from llmlab.align.ppo import PPOSettings, ValueHead, model_reward, ppo_step
from llmlab.align.rewards import REWARDS, resolve_rewards
from llmlab.common import checkpoint, log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device, seed_everything
from llmlab.common.errors import UserError
from llmlab.common.io import atomic_write, write_json_atomic, write_text_atomic
from llmlab.data.reasoning import task_prompts, train_test_cot, write_cot_jsonl
from llmlab.data.sft import split_validation
from llmlab.finetune.methods import apply_method
from llmlab.finetune.peft_format import save_peft_adapter
from llmlab.infer.api import end_of_turn_ids
from llmlab.infer.budget import MODES, budget_generate
from llmlab.loading import load
from llmlab.models.gpt import count_parameters
from llmlab.train.loop import TrainState
from llmlab.train.optim import lr_at
from llmlab.train.plot import running_mean

RL_METHODS = ("full", "lora", "qlora")
VALUE_HEAD_FILE = "value_head.safetensors"


@dataclass
class RLArgs:
    model: str = arg("smollm2-135m-instruct", "base model: alias, GGUF file, HF folder or llmlab checkpoint")
    data: str = arg("tasks", "'tasks' (built-in arithmetic and conversion) or a .jsonl of {prompt|messages, answer}")
    method: str = arg("lora", "what trains", choices=RL_METHODS)
    out: str = arg("runs/align", "output folder")
    rank: int = arg(16, "LoRA rank")
    alpha: float = arg(32.0, "LoRA alpha (the update is scaled by alpha/rank)")
    targets: list[str] = arg(["q_proj", "v_proj"], "LoRA target modules")
    lr: float = arg(1e-4, "peak learning rate")
    warmup_steps: int = arg(0, "linear warmup steps")
    min_lr_ratio: float = arg(1.0, "final learning rate as a fraction of the peak (1: constant, as TRL)")
    max_steps: int = arg(50, "optimizer updates of rollouts")
    max_minutes: float | None = arg(None, "stop (and save) after this many minutes of training")
    prompts_per_step: int = arg(4, "prompts sampled per step")
    max_new_tokens: int = arg(16, "longest completion in tokens")
    temperature: float = arg(1.0, "sampling temperature of the rollouts")
    rewards: list[str] = arg(["correct"], "reward functions", choices=list(REWARDS))
    reward_weights: list[float] = arg([], "one weight per reward function (default 1 each)")
    skip_reward_errors: bool = arg(False, "count samples whose reward function raises (reward 0) instead of stopping")
    think: bool = arg(False, "ask for <think>...</think> then the answer (the CoT system prompt)")
    n_train: int = arg(2000, "built-in tasks: training prompts")
    eval_examples: int = arg(64, "held-out prompts scored by greedy accuracy before and after (0: skip)")
    eval_max_new_tokens: int = arg(0, "tokens per held-out answer (0: max_new_tokens)")
    skip_bad_rows: bool = arg(False, "skip malformed data rows (counted) instead of stopping")
    ckpt_interval: int = arg(25, "steps between checkpoints (one is always written at the end)")
    device: str = arg("auto", "cpu, cuda, cuda:N or auto")
    seed: int = arg(0, "seed for adapter init, prompt order and sampling")
    resume: bool = arg(False, "continue from the checkpoint in --out exactly where it stopped")
    progress: bool = arg(True, "show a progress bar")


@dataclass
class GRPOArgs(RLArgs):
    out: str = arg("runs/grpo", "output folder")
    group_size: int = arg(8, "completions per prompt")
    beta: float = arg(0.0, "weight of the k3 KL to the reference (0: none, TRL's default)")
    epsilon_low: float = arg(0.2, "lower clip of the ratio")
    epsilon_high: float = arg(0.2, "upper clip of the ratio (DAPO: 0.28)")
    loss_type: str = arg("grpo", "loss normalisation", choices=["grpo", "bnpo", "dr_grpo", "dapo"])
    num_iterations: int = arg(1, "updates per rollout batch (ratios matter from the second)")
    scale_rewards: bool = arg(True, "divide advantages by the group's std (Dr. GRPO: off)")
    micro_batch: int = arg(0, "completions per forward/backward (0: all)")


@dataclass
class PPOArgs(RLArgs):
    out: str = arg("runs/ppo", "output folder")
    prompts_per_step: int = arg(16, "prompts (one completion each) per rollout batch")
    reward_model: str | None = arg(None, "a reward model folder from `llmlab align reward` (else --rewards)")
    kl_coef: float = arg(0.05, "per-token KL penalty")
    gamma: float = arg(1.0, "discount")
    lam: float = arg(0.95, "GAE lambda")
    cliprange: float = arg(0.2, "policy ratio clip")
    cliprange_value: float = arg(0.2, "value clip")
    vf_coef: float = arg(0.1, "weight of the value loss")
    ppo_epochs: int = arg(4, "passes over each rollout batch")
    mini_batch: int = arg(0, "completions per update within a pass (0: all)")
    whiten_rewards: bool = arg(False, "whiten per-token rewards")


# Settings that must not change across a resume (max_steps and max_minutes may, to extend a run).
RESUME_KEYS = ("model", "data", "method", "rank", "alpha", "targets", "lr", "warmup_steps", "min_lr_ratio", "seed",
               "prompts_per_step", "max_new_tokens", "temperature", "rewards", "reward_weights", "think", "n_train",
               "group_size", "beta", "loss_type", "num_iterations", "kl_coef", "ppo_epochs", "reward_model")


def _prompt_row(row: Any) -> dict:
    """One data row -> {"messages": prompt messages, "answer": reference or None}; ValueError says what is wrong.

    A conversation that ends with the assistant's turn is a prompt plus that turn as the answer (unless an
    "answer" field is given, which wins)."""
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    answer = row.get("answer")
    if isinstance(row.get("messages"), list):
        messages = list(row["messages"])
        if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
            last = messages.pop()
            answer = last.get("content") if answer is None else answer
    elif isinstance(row.get("prompt"), str):
        messages = [{"role": "user", "content": row["prompt"]}]
    elif isinstance(row.get("prompt"), list):
        messages = list(row["prompt"])
    else:
        raise ValueError(f"missing field: expected 'prompt' or 'messages', got keys {sorted(row)}")
    if not messages or any(not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant")
                           or not str(m.get("content", "")).strip() for m in messages):
        raise ValueError("the prompt needs messages with a role (system, user, assistant) and non-empty content")
    if answer is not None and (not isinstance(answer, str | int | float) or not str(answer).strip()):
        raise ValueError("'answer' must be a non-empty string")
    return {"messages": messages, "answer": None if answer is None else str(answer)}


def load_prompts(args: RLArgs) -> tuple[list[dict], list[dict], int]:
    """(training prompts, held-out prompts, rows skipped) as {"messages", "answer"}."""
    if args.data == "tasks":
        return (*task_prompts(args.n_train, args.eval_examples, args.seed, args.think), 0)
    path = Path(args.data)
    if not path.is_file():
        raise UserError(f"--data {args.data}: no such file; give 'tasks' or a .jsonl of {{prompt, answer}} rows")
    rows, skipped = [], 0
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(_prompt_row(json.loads(line)))
        except (json.JSONDecodeError, ValueError) as e:
            if not args.skip_bad_rows:
                raise UserError(f"{path}:{lineno}: {e}; fix the row or pass --skip-bad-rows") from None
            skipped += 1
    if len(rows) < 2:
        raise UserError(f"--data {path}: fewer than two usable rows")
    n_test = min(args.eval_examples, len(rows) // 5)
    train, test = split_validation(rows, n_test / len(rows) if n_test else 0.0, args.seed)
    return train, test, skipped


def step_prompts(tasks: list[dict], step: int, n: int, seed: int) -> list[dict]:
    """The prompts of a step: walk a seeded shuffle of the training set, reshuffled each pass."""
    start = step * n
    out = []
    for i in range(start, start + n):
        epoch, pos = divmod(i, len(tasks))
        order = list(range(len(tasks)))
        random.Random(seed * 7919 + epoch).shuffle(order)
        out.append(tasks[order[pos]])
    return out


def plot_curves(history: list[dict], keys: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5))
    for ax, key in zip(list(getattr(axes, "flat", [axes])), keys, strict=True):
        rows = [r for r in history if r.get(key) is not None]
        steps, values = [r["step"] for r in rows], [r[key] for r in rows]
        ax.plot(steps, values, linewidth=0.8, alpha=0.5, label="per step")
        w = max(1, len(values) // 10)  # a few prompts per step: the running mean shows the trend
        if w > 1:
            ax.plot(steps, running_mean(values, w), linewidth=1.8, label=f"mean of {w}")
            ax.legend(fontsize=7)
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def _mean(rows: list[dict], key: str = "reward") -> float | None:
    """Mean of a step metric over `rows` (one step's value is too noisy to compare a run's start and end)."""
    values = [r[key] for r in rows if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def _train(args: RLArgs, kind: str) -> dict[str, Any]:
    """The run both `grpo` and `ppo` are: load, score, train with checkpoints, score, write."""
    if args.method not in RL_METHODS:
        raise UserError(f"--method {args.method}: unknown; choose one of {', '.join(RL_METHODS)}")
    if args.max_steps < 1 or args.prompts_per_step < 1:
        raise UserError("--max-steps and --prompts-per-step must be at least 1")
    seed_everything(args.seed)
    device, out = resolve_device(args.device), Path(args.out)
    ckpt = out if args.method == "full" else out / "checkpoint"
    if out.exists() and any(out.iterdir()) and not args.resume:
        raise UserError(f"--out {out}: folder is not empty; pass --resume to continue it or choose a new --out")
    if args.resume and not checkpoint.is_checkpoint(ckpt):
        raise UserError(f"--resume: {ckpt} holds no {kind} checkpoint; drop --resume or fix --out")
    loaded = load(args.model)
    tokenizer = loaded.tokenizer
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise UserError(f"--model {args.model}: has no tokenizer with a chat template, needed to render prompts")
    functions, weights = resolve_rewards(list(args.rewards), list(args.reward_weights))
    if kind == "ppo" and args.reward_model:
        from llmlab.align.reward import score  # the reward-model stage

        functions, weights = {"reward_model": model_reward(load(args.reward_model).model.to(device), score)}, [1.0]
    train_rows, test_rows, skipped = load_prompts(args)
    seq_len = loaded.model.config.seq_len
    eval_tokens = args.eval_max_new_tokens or args.max_new_tokens
    train = encode_prompts(train_rows, tokenizer, seq_len, args.max_new_tokens)
    held_out = encode_prompts(test_rows, tokenizer, seq_len, eval_tokens)
    stops = end_of_turn_ids(tokenizer)
    model = loaded.model.to(device)
    saved = checkpoint.read_meta(ckpt) if args.resume else {}
    if args.resume:
        checkpoint.check_resume(saved.get("run", {}), dataclasses.asdict(args), RESUME_KEYS, f"--resume {ckpt}")
    scored_before = saved.get("scored_before")
    if held_out and scored_before is None:
        scored_before = {k: v for k, v in answer_accuracy(model, tokenizer, held_out, eval_tokens, stops).items()
                         if k != "samples"}
        log.info(f"{kind}: held-out answer accuracy before training: {scored_before['accuracy']:.3f} "
                 f"({scored_before['tokens_per_answer']:.1f} tokens per answer)")
    before = scored_before["accuracy"] if scored_before else None
    total_params = count_parameters(model)
    spec = {"name": args.method, "rank": args.rank, "alpha": args.alpha, "targets": list(args.targets)}
    ref_model = None
    if args.method == "full" and (kind == "ppo" or getattr(args, "beta", 0.0) != 0.0):
        ref_model = load(args.model).model.to(device).eval().requires_grad_(False)
    model, notes = apply_method(model, spec)
    model.to(device)
    ref = reference_fn(model, ref_model, args.temperature) if (ref_model is not None or args.method != "full") \
        else None
    value_head = ValueHead(model.config.n_embd).to(device) if kind == "ppo" else None
    params = [p for p in model.parameters() if p.requires_grad] + \
        (list(value_head.parameters()) if value_head is not None else [])
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    state = TrainState()
    if args.resume:
        if value_head is not None:
            value_head.load_state_dict(load_file(checkpoint.resolve(ckpt) / VALUE_HEAD_FILE))
        state = TrainState(**checkpoint.restore_training_state(ckpt, model, optimizer)["state"])
        log.info(f"{kind}: resumed {ckpt} at step {state.step}")
    record = dataclasses.asdict(args)

    def save(st: TrainState) -> None:
        meta = {"run": record, "state": st.to_dict(), "scored_before": scored_before, "kind": kind}
        extra = {VALUE_HEAD_FILE: value_head.state_dict()} if value_head is not None else None
        if args.method == "full":
            checkpoint.save_checkpoint(ckpt, model, meta, tokenizer=tokenizer, optimizer=optimizer,
                                       extra_tensors=extra)
        else:
            meta.update(base=checkpoint.base_reference(args.model), method=spec)
            checkpoint.save_checkpoint(ckpt, model, meta, optimizer=optimizer, trainable_only=True,
                                       extra_tensors=extra)

    if kind == "grpo":
        settings = GRPOSettings(args.group_size, args.max_new_tokens, args.temperature, None, args.beta,
                                args.epsilon_low, args.epsilon_high, args.loss_type, args.num_iterations,
                                args.scale_rewards, micro_batch=args.micro_batch)
        settings.check()

        def one_step(tasks: list[dict], seed: int) -> dict:
            return grpo_step(model, optimizer, tokenizer, tasks, functions, weights, settings, seed=seed,
                             stop_ids=stops, ref=ref, skip_reward_errors=args.skip_reward_errors)
    else:
        settings = PPOSettings(args.max_new_tokens, args.temperature, args.kl_coef, args.gamma, args.lam,
                               args.cliprange, args.cliprange_value, args.vf_coef, args.ppo_epochs, args.mini_batch,
                               args.whiten_rewards)

        def one_step(tasks: list[dict], seed: int) -> dict:
            return ppo_step(model, value_head, optimizer, tokenizer, tasks, functions, weights, settings, seed=seed,
                            stop_ids=stops, ref=ref, skip_reward_errors=args.skip_reward_errors)

    bar = tqdm(total=args.max_steps, initial=state.step, unit="step", disable=not args.progress, dynamic_ncols=True)
    t_start, elapsed0, first_step = time.perf_counter(), state.elapsed_s, state.step
    while state.step < args.max_steps:
        lr = lr_at(state.step, args.max_steps, args.lr, args.warmup_steps, args.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        t0, c0 = time.perf_counter(), time.process_time()
        metrics = one_step(step_prompts(train, state.step, args.prompts_per_step, args.seed),
                           args.seed * 1_000_003 + state.step * 10_007)
        state.step += 1
        state.elapsed_s = elapsed0 + time.perf_counter() - t_start
        # CPU seconds next to wall seconds: on a shared machine the wall clock says more about the neighbours
        row = {"step": state.step, "lr": lr, "step_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
               **metrics}
        state.history.append(row)
        bar.update(1)
        bar.set_postfix({k: f"{row[k]:.3g}" for k in ("reward", "loss", "kl", "completion_length") if k in row})
        stop_now = args.max_minutes is not None and state.elapsed_s >= args.max_minutes * 60
        if state.step == args.max_steps or stop_now or state.step % max(args.ckpt_interval, 1) == 0:
            save(state)
        if stop_now:
            break
    bar.close()
    scored_after = answer_accuracy(model, tokenizer, held_out, eval_tokens, stops) if held_out else {}
    after, samples = scored_after.get("accuracy"), scored_after.pop("samples", [])
    if args.method in ("lora", "qlora"):
        save_peft_adapter(model, out, base_model_name_or_path=checkpoint.base_reference(args.model))
    ran = state.history[first_step:] or state.history
    summary = {
        "kind": kind, "method": args.method, "model": args.model, "steps": state.step,
        "trainable_params": sum(p.numel() for p in params), "total_params": total_params,
        "time_per_step_s": state.elapsed_s / max(state.step, 1),
        "cpu_per_step_s": sum(r["cpu_s"] for r in ran if "cpu_s" in r) / max(len(ran), 1),
        "train_s": state.elapsed_s, "accuracy_before": before, "accuracy_after": after,
        "tokens_per_answer_before": (scored_before or {}).get("tokens_per_answer"),
        "tokens_per_answer_after": scored_after.get("tokens_per_answer"),
        "finished_before": (scored_before or {}).get("finished"), "finished_after": scored_after.get("finished"),
        "eval_max_new_tokens": eval_tokens, "held_out": len(held_out), "train_prompts": len(train),
        "skipped_rows": skipped,
        "examples_seen": state.step * args.prompts_per_step,
        "reward_first": _mean(ran[:max(1, len(ran) // 5)]), "reward_last": _mean(ran[-max(1, len(ran) // 5):]),
        "kl_first": _mean(ran[:max(1, len(ran) // 5)], "kl"), "kl_last": _mean(ran[-max(1, len(ran) // 5):], "kl"),
        "kl_max": max((r["kl"] for r in ran if r.get("kl") is not None), default=None),
        "samples": samples, **notes,
    }
    write_json_atomic(out / "summary.json", summary)
    write_json_atomic(out / "history.json", state.history)
    keys = ["reward", "completion_length"] + (["kl"] if kind == "ppo" or getattr(args, "beta", 0.0) else [])
    plot_curves(state.history, keys, out / "curves.png", f"{kind} on {args.data} ({args.method})")
    acc = (f"{before:.3f} -> {after:.3f}; tokens per answer {summary['tokens_per_answer_before']:.1f} -> "
           f"{summary['tokens_per_answer_after']:.1f} (greedy, at most {eval_tokens})"
           if after is not None and before is not None else "not measured")
    write_text_atomic(out / "report.md", f"# {kind}: {args.model} on {args.data} ({args.method})\n\n"
                      f"- steps: {state.step}, {summary['time_per_step_s']:.2f} s/step "
                      f"({summary['cpu_per_step_s']:.2f} CPU s/step), {summary['examples_seen']} prompts seen\n"
                      f"- held-out answer accuracy ({len(held_out)}): {acc}\n"
                      f"- mean reward, first / last fifth of the steps: {summary['reward_first']:.3f} / "
                      f"{summary['reward_last']:.3f}\n"
                      + (f"- KL to the reference, first / last fifth (max): {summary['kl_first']:.4f} / "
                         f"{summary['kl_last']:.4f} ({summary['kl_max']:.4f})\n" if summary["kl_max"] is not None
                         else "") + "\n"
                      "![curves](curves.png)\n")
    log.info(f"done: {kind} {args.method}, {state.step} steps, {summary['time_per_step_s']:.2f} s/step; "
             f"held-out accuracy {acc}; output in {out}")
    return {**summary, "model": model, "tokenizer": tokenizer, "value_head": value_head}


def grpo(args: GRPOArgs) -> dict[str, Any]:
    """GRPO per `args`; returns the summary also written to <out>/summary.json, plus the trained model."""
    return _train(args, "grpo")


def ppo(args: PPOArgs) -> dict[str, Any]:
    """PPO per `args`; returns the summary also written to <out>/summary.json, plus the model and value head."""
    return _train(args, "ppo")


@dataclass
class BudgetArgs:
    model: str = arg(dataclasses.MISSING, "a model that thinks in <think>...</think> (e.g. CoT SFT output)")
    out: str = arg("runs/budget", "folder for budget.json and budget.png")
    budgets: list[int] = arg([0, 8, 16, 32, 64], "maximum thinking tokens to try")
    min_thinking: int = arg(0, "minimum thinking tokens (capped at each budget)")
    mode: str = arg("suppress", "how the minimum is enforced", choices=list(MODES))
    eval_examples: int = arg(64, "held-out built-in tasks to answer")
    max_answer_tokens: int = arg(12, "tokens for the answer after thinking")
    seed: int = arg(0, "seed of the held-out tasks")
    device: str = arg("auto", "cpu, cuda, cuda:N or auto")


def budget(args: BudgetArgs) -> list[dict]:
    """Held-out accuracy at each thinking budget (greedy); writes budget.json and the budget.png plot."""
    from llmlab.align.rewards import answer_is_correct

    if not args.budgets or min(args.budgets) < 0:
        raise UserError("--budgets: give one or more budgets of 0 or more thinking tokens")
    lm = load(args.model)
    model = lm.model.to(resolve_device(args.device))
    tok = lm.tokenizer
    _, tasks = train_test_cot(0, args.eval_examples, args.seed)
    prompts = [tok.encode(tok.render(t["messages"][:-1], add_generation_prompt=True), allowed_special="all")
               for t in tasks]
    rows = []
    for b in sorted(args.budgets):
        thoughts = []
        for i in range(0, len(prompts), 16):
            thoughts += budget_generate(model, tok, prompts[i:i + 16], min_thinking=min(args.min_thinking, b),
                                        max_thinking=b, max_answer_tokens=args.max_answer_tokens, mode=args.mode,
                                        stop_ids=end_of_turn_ids(tok), temperature=0.0)
        hits = [answer_is_correct(th.answer, t["answer"]) for th, t in zip(thoughts, tasks, strict=True)]
        rows.append({"budget": b, "accuracy": sum(hits) / len(hits),
                     "thinking_tokens": sum(th.thinking_tokens for th in thoughts) / len(thoughts),
                     "forced_end": sum(th.forced_end for th in thoughts) / len(thoughts),
                     "example": {"thinking": thoughts[0].thinking, "answer": thoughts[0].answer}})
        log.info(f"budget {b}: accuracy {rows[-1]['accuracy']:.3f}, {rows[-1]['thinking_tokens']:.1f} thinking tokens")
    out = Path(args.out)
    write_json_atomic(out / "budget.json", rows)
    plot_curves([{"step": r["budget"], "accuracy": r["accuracy"]} for r in rows], ["accuracy"], out / "budget.png",
                f"accuracy against thinking budget ({args.model})")
    return rows


@dataclass
class ReasoningArgs:
    out: str = arg("data/cot.jsonl", "where to write the training rows (held-out rows go to *.heldout.jsonl)")
    n_train: int = arg(2000, "training rows")
    n_heldout: int = arg(64, "held-out rows")
    seed: int = arg(0, "seed")


def reasoning(args: ReasoningArgs) -> dict[str, Any]:
    """Write chain-of-thought SFT rows for the built-in arithmetic and conversion tasks."""
    train, test = train_test_cot(args.n_train, args.n_heldout, args.seed)
    out = Path(args.out)
    held = out.with_name(out.stem + ".heldout.jsonl")
    write_cot_jsonl(train, out)
    write_cot_jsonl(test, held)
    log.info(f"reasoning: {len(train)} rows in {out}, {len(test)} held-out rows in {held}")
    return {"train": str(out), "heldout": str(held), "n_train": len(train), "n_heldout": len(test)}
