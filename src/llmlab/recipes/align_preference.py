"""`llmlab align reward`, `llmlab align dpo` and `llmlab align constitution`: learning from preference pairs.

    llmlab align dpo --model smollm2-135m-instruct --data tasks --method lora --max-steps 60 --out runs/dpo
    llmlab align reward --model smollm2-135m-instruct --data tasks --method lora --max-steps 60 --out runs/rm
    llmlab align constitution --model smollm2-135m-instruct --out runs/cai

`dpo` reads preference pairs (`llmlab.data.preference`), scores held-out
preference accuracy (the implicit reward ranks chosen above rejected) and, on
the built-in tasks, the greedy answers to the held-out questions twice: exact match of the whole first line
(`llmlab.eval.exact_match`) and the answer checker GRPO is scored with (`llmlab.align.rewards.answer_is_correct`:
the number in "There are 36 marbles." counts); applies the method
(`llmlab.finetune.methods`), trains on the shared loop with a preference loss
(`llmlab.align.dpo`), scores again and writes `--out` the way `llmlab finetune`
does (full: a checkpoint folder; lora/qlora: checkpoint/ plus PEFT's adapter
files), with summary.json, history.json, rewards.png and report.md.
`reward` trains a scalar head with the Bradley–Terry loss (`llmlab.align.reward`)
and writes checkpoint/ and hf/ (transformers' sequence-classification layout).
`constitution` runs answer -> critique -> revision (`llmlab.align.constitution`)
and writes sft.jsonl, preference.jsonl and revisions.jsonl.
`llmlab.load(out)` opens the model outputs as they were when training ended.
"""

import copy
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from llmlab.align import constitution as cai
from llmlab.align.dpo import LOSS_TYPES, PreferenceLoss, preference_accuracy, preference_batches, preference_loss
from llmlab.align.logprobs import ReferenceLogps
from llmlab.align.reward import export_hf, pair_batches, pairwise_accuracy, reward_loss
from llmlab.align.rewards import answer_is_correct
from llmlab.common import checkpoint, log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device, seed_everything
from llmlab.common.errors import UserError
from llmlab.common.io import atomic_write, write_json_atomic, write_text_atomic
from llmlab.data.preference import load_preferences, tokenize_preferences
from llmlab.eval.exact_match import exact_match, generate_answers
from llmlab.finetune.methods import apply_method
from llmlab.finetune.peft_format import save_peft_adapter
from llmlab.infer.api import LocalChat
from llmlab.loading import load
from llmlab.models.gpt import count_parameters
from llmlab.train.loop import LoopSettings, TrainState, train_loop
from llmlab.train.optim import make_adamw

METHODS = ("full", "lora", "qlora")
# DPO moves a model far with small steps: TRL's default is 1e-6 for full training; LoRA updates start at zero
DEFAULT_LR = {"dpo": {"full": 1e-6, "lora": 5e-4, "qlora": 5e-4}, "reward": {"full": 1e-5, "lora": 1e-3, "qlora": 1e-3}}


@dataclass
class PreferenceTrainArgs:
    model: str = arg("smollm2-135m-instruct", "base model: alias, GGUF file, HF folder or llmlab checkpoint")
    data: str = arg("tasks", "'tasks' (built-in pairs, generated offline) or a .jsonl file of preference rows")
    method: str = arg("lora", "what trains", choices=METHODS)
    out: str = arg("runs/align", "output folder")
    rank: int = arg(8, "LoRA rank")
    alpha: float = arg(16.0, "LoRA alpha (the update is scaled by alpha/rank)")
    dropout: float = arg(0.0, "dropout on the LoRA input")
    targets: list[str] = arg(["q_proj", "v_proj"], "LoRA target modules: names, dotted suffixes or regexes")
    lr: float | None = arg(None, "peak learning rate (default per command and method)")
    min_lr_ratio: float = arg(0.1, "final learning rate as a fraction of the peak")
    warmup_steps: int = arg(5, "linear warmup steps")
    weight_decay: float = arg(0.0, "AdamW decoupled weight decay (matrices only)")
    grad_clip: float = arg(1.0, "clip the global gradient norm to this (0: off)")
    batch_size: int = arg(4, "preference pairs per micro-batch")
    grad_accum: int = arg(1, "micro-batches per optimizer step")
    max_len: int = arg(256, "tokens per prompt + answer; longer ones keep their start")
    max_steps: int = arg(100, "optimizer steps in the whole run")
    max_minutes: float | None = arg(None, "stop (and save) after this many minutes of training")
    ckpt_interval: int = arg(50, "steps between checkpoints (one is always written at the end)")
    val_fraction: float = arg(0.1, "share of a data file's prompts held out")
    n_train: int = arg(2000, "built-in tasks: training pairs")
    eval_pairs: int = arg(64, "held-out pairs scored before and after (0: skip)")
    skip_bad_rows: bool = arg(False, "skip malformed rows (counted in the summary) instead of stopping")
    device: str = arg("auto", "cpu, cuda, cuda:N or auto")
    bf16: bool = arg(False, "autocast matmuls to bfloat16")
    seed: int = arg(0, "seed for adapter init, the head, data order and the built-in pairs")
    resume: bool = arg(False, "continue from the checkpoint in --out exactly where it stopped")
    progress: bool = arg(True, "show a progress bar")


RESUME_KEYS = ("model", "data", "method", "rank", "alpha", "dropout", "targets", "lr", "batch_size", "grad_accum",
               "max_len", "seed", "n_train", "warmup_steps", "min_lr_ratio", "weight_decay")


@dataclass
class DPOArgs(PreferenceTrainArgs):
    out: str = arg("runs/dpo", "output folder (adapter files or a full checkpoint, summary.json, report.md)")
    beta: float = arg(0.1, "β: how far from the reference the policy may move (simpo: reward scale, try 2)")
    loss_type: str = arg("sigmoid", "preference loss (simpo needs no reference model)", choices=LOSS_TYPES)
    label_smoothing: float = arg(0.0, "cDPO: assumed share of flipped labels (sigmoid and simpo)")
    simpo_gamma: float = arg(0.5, "SimPO's target reward margin γ")
    eval_examples: int = arg(64, "built-in tasks: held-out questions scored by exact match (0: skip)")
    max_new_tokens: int = arg(12, "tokens generated per exact-match answer")


@dataclass
class RewardArgs(PreferenceTrainArgs):
    out: str = arg("runs/reward", "output folder: checkpoint/, hf/ (transformers layout), summary.json")
    margin: float | None = arg(None, "Bradley–Terry margin: pairs must be ranked apart by at least this")


def _check_out(args: PreferenceTrainArgs, ckpt: Path) -> None:
    out = Path(args.out)
    if args.method not in METHODS:
        raise UserError(f"--method {args.method}: unknown; choose one of {', '.join(METHODS)}")
    if out.exists() and any(out.iterdir()) and not args.resume:
        raise UserError(f"--out {out}: folder is not empty; pass --resume to continue it or choose a new --out")
    if args.resume and not checkpoint.is_checkpoint(ckpt):
        raise UserError(f"--resume: {ckpt} holds no checkpoint of this command; drop --resume or fix --out")


def _prepare(args: PreferenceTrainArgs, n_heldout: int):
    """(loaded base, training examples, held-out examples, held-out rows, rows skipped, max_len)."""
    loaded = load(args.model)
    if loaded.tokenizer is None:
        raise UserError(f"--model {args.model}: has no tokenizer, needed to render preference rows")
    train_rows, held_rows, skipped = load_preferences(args.data, args.val_fraction, args.seed, args.skip_bad_rows,
                                                      args.n_train, n_heldout)
    max_len = min(args.max_len, loaded.model.config.seq_len)
    train_ex, _, bad = tokenize_preferences(loaded.tokenizer, train_rows, max_len, args.skip_bad_rows)
    held_ex, held_rows, bad_held = (tokenize_preferences(loaded.tokenizer, held_rows, max_len, args.skip_bad_rows)
                                    if held_rows else ([], [], 0))
    log.info(f"align: {len(train_ex)} training and {len(held_ex)} held-out pairs "
             f"({skipped + bad + bad_held} bad rows skipped)")
    return loaded, train_ex, held_ex, held_rows, skipped + bad + bad_held, max_len


def _train(args: PreferenceTrainArgs, model: torch.nn.Module, ckpt: Path, meta: dict, lr: float,
           make_batches: Callable[[int], Callable], loss_fn: Callable, save_kwargs: dict,
           show: tuple[str, ...]) -> TrainState:
    """The shared loop with exact resume and atomic checkpoints; `meta` is saved with each checkpoint."""
    optimizer = make_adamw(model, lr, args.weight_decay, device_type=next(model.parameters()).device.type)
    state = TrainState()
    if args.resume:
        state = TrainState(**checkpoint.restore_training_state(ckpt, model, optimizer)["state"])
        log.info(f"align: resumed {ckpt} at step {state.step}")

    def save(st: TrainState) -> None:
        checkpoint.save_checkpoint(ckpt, model, {**meta, "state": st.to_dict()}, optimizer=optimizer, **save_kwargs)

    settings = LoopSettings(max_steps=args.max_steps, lr=lr, warmup_steps=args.warmup_steps,
                            min_lr_ratio=args.min_lr_ratio, grad_accum=args.grad_accum, grad_clip=args.grad_clip,
                            ckpt_interval=args.ckpt_interval, progress=args.progress, show=show,
                            max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    return train_loop(model, optimizer, make_batches(state.step * args.grad_accum), settings, state, save=save,
                      loss_fn=loss_fn, autocast_dtype=torch.bfloat16 if args.bf16 else None)


def plot_history(history: list[dict], keys: tuple[str, ...], path: Path, title: str) -> None:
    """One line per logged metric against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key in keys:
        rows = [r for r in history if r.get(key) is not None]
        ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=key, linewidth=1)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def _report(out: Path, title: str, summary: dict, keys: list[str]) -> None:
    lines = [f"# {title}", "", f"model `{summary['model']}`, data `{summary['data']}`, method `{summary['method']}`, "
             f"{summary['steps']} steps", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {summary[k]:.4g} |" if isinstance(summary.get(k), float) else f"| {k} | {summary.get(k)} |"
              for k in keys]
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")


def _finish(args, out: Path, state: TrainState, summary: dict, keys: tuple[str, ...], title: str) -> None:
    write_json_atomic(out / "summary.json", summary)
    write_json_atomic(out / "history.json", state.history)
    plot_history(state.history, keys, out / ("rewards.png" if "rewards/margins" in keys else "reward_model.png"),
                 title)
    _report(out, title, summary, [k for k in summary if k.endswith(("_before", "_after")) or k in (
        "final_loss", "time_per_step_s", "trainable_params", "skipped_rows")])


def task_scores(model: torch.nn.Module, tokenizer, conversations: list[list[dict]], max_new_tokens: int) -> dict:
    """Greedy answers to held-out task conversations, scored by whole-line exact match and by the answer checker."""
    answers = generate_answers(model, tokenizer, conversations, max_new_tokens)
    refs = [[m for m in c if m["role"] == "assistant"][-1]["content"] for c in conversations]
    pairs = list(zip(answers, refs, strict=True))
    return {"exact_match": sum(exact_match(a, r) for a, r in pairs) / len(pairs),
            "answer_accuracy": sum(answer_is_correct(a, r) for a, r in pairs) / len(pairs)}


def _method_spec(args: PreferenceTrainArgs) -> dict[str, Any]:
    return {"name": args.method, "rank": args.rank, "alpha": args.alpha, "dropout": args.dropout,
            "targets": list(args.targets), "seed": args.seed}


def dpo(args: DPOArgs) -> dict[str, Any]:
    """Train a policy on preference pairs per `args`; returns the summary (also <out>/summary.json) and the model."""
    out = Path(args.out)
    ckpt = out if args.method == "full" else out / "checkpoint"
    _check_out(args, ckpt)
    args = dataclasses.replace(args, lr=DEFAULT_LR["dpo"][args.method] if args.lr is None else args.lr)
    spec = PreferenceLoss(args.beta, args.loss_type, args.label_smoothing, args.simpo_gamma)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    loaded, train_ex, held_ex, held_rows, skipped, max_len = _prepare(args, max(args.eval_pairs, args.eval_examples))
    tokenizer, model = loaded.tokenizer, loaded.model.to(device)
    saved = checkpoint.read_meta(ckpt) if args.resume else {}
    if args.resume:
        checkpoint.check_resume(saved.get("run", {}), dataclasses.asdict(args), RESUME_KEYS + (
            "beta", "loss_type", "label_smoothing", "simpo_gamma"), f"--resume {ckpt}")
    questions = [r.prompt + r.chosen for r in held_rows if r.answer is not None][:args.eval_examples]
    tasks_before = saved.get("tasks_before")
    if questions and tasks_before is None:
        tasks_before = task_scores(model, tokenizer, questions, args.max_new_tokens)
    # the reference is the model before training: a frozen copy, or for LoRA the policy with its adapters off
    frozen = copy.deepcopy(model).requires_grad_(False).eval() if args.method == "full" and spec.needs_reference \
        else None
    total = count_parameters(model)
    model, notes = apply_method(model, _method_spec(args))
    model.to(device)
    trainable = count_parameters(model, trainable_only=True)

    def reference(examples):
        return ReferenceLogps(examples, tokenizer.pad_id, max_len, frozen) if spec.needs_reference else None

    held = held_ex[:args.eval_pairs]
    evaluate = lambda: preference_accuracy(model, held, spec, tokenizer.pad_id, max_len,  # noqa: E731
                                           reference(held)) if held else {}
    pref_before = saved.get("preference_before") or evaluate()
    meta = {"run": dataclasses.asdict(args), "tasks_before": tasks_before, "preference_before": pref_before}
    save_kwargs = {"tokenizer": tokenizer} if args.method == "full" else {"trainable_only": True}
    if args.method != "full":
        meta.update(base=checkpoint.base_reference(args.model), method=_method_spec(args))
    ref_train = reference(train_ex)
    state = _train(args, model, ckpt, meta, args.lr,
                   lambda pos: preference_batches(train_ex, args.batch_size, tokenizer.pad_id, max_len, model,
                                                  ref_train, args.seed, pos),
                   preference_loss(spec), save_kwargs, show=("rewards/margins", "rewards/accuracies"))
    pref_after = evaluate()
    tasks_after = task_scores(model, tokenizer, questions, args.max_new_tokens) if questions else {}
    tasks_before = tasks_before or {}
    em_before, em_after = tasks_before.get("exact_match"), tasks_after.get("exact_match")
    if args.method in ("lora", "qlora"):
        save_peft_adapter(model, out, base_model_name_or_path=checkpoint.base_reference(args.model))
    summary = {
        "command": "align dpo", "model": args.model, "data": args.data, "method": args.method,
        "loss_type": args.loss_type, "beta": args.beta, "steps": state.step, "trainable_params": trainable,
        "total_params": total, "time_per_step_s": state.elapsed_s / max(state.step, 1),
        "final_loss": state.history[-1]["loss"] if state.history else None,
        "preference_accuracy_before": pref_before.get("accuracy"),
        "preference_accuracy_after": pref_after.get("accuracy"),
        "reward_margin_before": pref_before.get("margin"), "reward_margin_after": pref_after.get("margin"),
        "exact_match_before": em_before, "exact_match_after": em_after,
        "answer_accuracy_before": tasks_before.get("answer_accuracy"),
        "answer_accuracy_after": tasks_after.get("answer_accuracy"), "held_out_pairs": len(held),
        "held_out_questions": len(questions), "skipped_rows": skipped, **notes,
    }
    _finish(args, out, state, summary, ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"),
            f"DPO ({args.loss_type}, beta={args.beta})")
    log.info(f"done: align dpo, {state.step} steps; held-out preference accuracy "
             f"{summary['preference_accuracy_before']} -> {summary['preference_accuracy_after']}, exact match "
             f"{em_before} -> {em_after}, answer accuracy {summary['answer_accuracy_before']} -> "
             f"{summary['answer_accuracy_after']}; output in {out}")
    return {**summary, "model": model, "tokenizer": tokenizer}


def reward(args: RewardArgs) -> dict[str, Any]:
    """Train a reward model per `args`; returns the summary (also <out>/summary.json) and the model."""
    out = Path(args.out)
    ckpt = out / "checkpoint"
    _check_out(args, ckpt)
    args = dataclasses.replace(args, lr=DEFAULT_LR["reward"][args.method] if args.lr is None else args.lr)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    loaded, train_ex, held_ex, _, skipped, max_len = _prepare(args, args.eval_pairs)
    tokenizer = loaded.tokenizer
    if args.resume:
        saved = checkpoint.read_meta(ckpt)
        checkpoint.check_resume(saved.get("run", {}), dataclasses.asdict(args), RESUME_KEYS + ("margin",),
                                f"--resume {ckpt}")
    total = count_parameters(loaded.model)
    spec = {**_method_spec(args), "name": "reward", "under": args.method}
    model, notes = apply_method(loaded.model, spec)
    model.to(device)
    trainable = count_parameters(model, trainable_only=True)
    held = held_ex[:args.eval_pairs]
    before = pairwise_accuracy(model, held, tokenizer.pad_id, max_len) if held else {}
    meta = {"run": dataclasses.asdict(args), "base": checkpoint.base_reference(args.model), "method": spec,
            "pad_id": tokenizer.pad_id}
    state = _train(args, model, ckpt, meta, args.lr,
                   lambda pos: pair_batches(train_ex, args.batch_size, tokenizer.pad_id, max_len, device, args.seed,
                                            pos),
                   reward_loss(args.margin), {"trainable_only": True}, show=("accuracy", "margin"))
    after = pairwise_accuracy(model, held, tokenizer.pad_id, max_len) if held else {}
    export_hf(model, out / "hf", tokenizer.pad_id, tokenizer)
    summary = {
        "command": "align reward", "model": args.model, "data": args.data, "method": args.method,
        "steps": state.step, "trainable_params": trainable, "total_params": total,
        "time_per_step_s": state.elapsed_s / max(state.step, 1),
        "final_loss": state.history[-1]["loss"] if state.history else None,
        "pairwise_accuracy_before": before.get("accuracy"), "pairwise_accuracy_after": after.get("accuracy"),
        "reward_margin_before": before.get("margin"), "reward_margin_after": after.get("margin"),
        "held_out_pairs": len(held), "skipped_rows": skipped, **notes,
    }
    _finish(args, out, state, summary, ("loss", "accuracy", "margin"), "reward model (Bradley-Terry)")
    log.info(f"done: align reward, {state.step} steps; held-out pairwise accuracy {summary['pairwise_accuracy_before']}"
             f" -> {summary['pairwise_accuracy_after']}; output in {out}")
    return {**summary, "model": model, "tokenizer": tokenizer}


@dataclass
class ConstitutionArgs:
    model: str = arg("smollm2-135m-instruct", "the model that answers, critiques and revises")
    principles: str | None = arg(None, "text file, one principle per line (default: the package's own 12)")
    prompts: str | None = arg(None, "text file, one prompt per line (default: the package's 30 red-team prompts)")
    out: str = arg("runs/constitution", "output folder: sft.jsonl, preference.jsonl, revisions.jsonl")
    max_prompts: int = arg(0, "use only the first N prompts (0: all)")
    max_new_tokens: int = arg(128, "tokens per answer, critique and revision")
    temperature: float = arg(0.0, "sampling temperature (0: greedy)")
    device: str = arg("auto", "cpu, cuda, cuda:N or auto")
    seed: int = arg(0, "seed for the principle drawn per prompt and for sampling")
    progress: bool = arg(True, "show a progress bar")


def constitution(args: ConstitutionArgs) -> dict[str, Any]:
    """Answer, critique and revise each prompt; write SFT and preference rows. Returns the summary."""
    principles, prompts = cai.load_principles(args.principles), cai.load_prompts(args.prompts)
    prompts = prompts[:args.max_prompts] if args.max_prompts > 0 else prompts
    lm = load(args.model, device=resolve_device(args.device))
    local = LocalChat(lm, truncate=True, seed=args.seed)
    bar = tqdm(total=3 * len(prompts), disable=not args.progress, unit="reply", dynamic_ncols=True)

    def chat(messages: list[dict]) -> str:
        reply = local.chat(messages, max_new_tokens=args.max_new_tokens, temperature=args.temperature)
        bar.update(1)
        return reply

    revisions = cai.constitutional_revisions(chat, prompts, principles, args.seed)
    bar.close()
    sft, pairs, dropped = cai.to_rows(revisions)
    out = Path(args.out)
    for name, rows in (("sft.jsonl", sft), ("preference.jsonl", pairs),
                       ("revisions.jsonl", cai.revision_records(revisions))):
        write_text_atomic(out / name, "".join(json.dumps(r) + "\n" for r in rows))
    summary = {"command": "align constitution", "model": args.model, "prompts": len(prompts),
               "principles": len(principles), "sft_rows": len(sft), "preference_rows": len(pairs),
               "dropped": dropped}
    write_json_atomic(out / "summary.json", summary)
    log.info(f"done: align constitution, {len(sft)} SFT and {len(pairs)} preference rows in {out}")
    return summary
