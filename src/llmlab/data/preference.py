"""Preference data: (prompt, chosen, rejected) rows read, validated, tokenised and collated; and a built-in set.

Rows are JSON lines in one of TRL's two shapes:

    conversational  {"prompt": [{"role": "user", "content": "2+2?"}],
                     "chosen": [{"role": "assistant", "content": "4"}],
                     "rejected": [{"role": "assistant", "content": "5"}]}     rendered with the chat template
    standard        {"prompt": "2+2=", "chosen": " 4", "rejected": " 5"}       text joined as it is, plus eos

Tokenising follows TRL's DPOTrainer: render and encode the prompt alone and the
prompt with each completion; the completion starts where the two stop agreeing
(usually right after the prompt); a standard completion gets the eos token
appended. A sequence longer than `max_len` keeps its start (TRL's `keep_start`),
and a prompt that fills the whole length is an error, since nothing of its
completions would be left to compare.

Collated batches put the chosen rows first and the rejected rows after them,
already shifted for next-token prediction:

    idx (2B, T)        prompt + completion tokens, right-padded
    targets (2B, T)    the next token where it is a completion token, -100 elsewhere
    attn_mask (2B, T)  True on real tokens

The built-in set (`"tasks"`) pairs each question of `llmlab.data.tasks` with its
exact answer (chosen) and a wrong or rambling one (rejected). This file knows
token ids and text, not models: the log-probabilities are `llmlab.align.logprobs`'s.
"""

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmlab.common import log
from llmlab.common.constants import CHAT_ROLES, IGNORE_INDEX
from llmlab.common.errors import UserError
from llmlab.data.tasks import train_test_tasks

Messages = list[dict[str, str]]
FIELDS = ("prompt", "chosen", "rejected")


@dataclass
class PreferenceRow:
    """One comparison: prompt, a preferred and a dispreferred completion (all text, or all messages)."""

    prompt: str | Messages
    chosen: str | Messages
    rejected: str | Messages
    where: str = ""  # "file.jsonl:12", so later errors (a prompt too long) still name the row
    answer: str | None = None  # built-in tasks: the exact answer, for exact match

    @property
    def conversational(self) -> bool:
        return isinstance(self.prompt, list)


@dataclass
class PreferenceExample:
    """A tokenised row: the shared prompt and the two completions, as TRL's `prompt_ids`/`chosen_ids`/..."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


def _check_messages(messages: Any, name: str, assistant_only: bool) -> Messages:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"'{name}' must be a non-empty list of messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"{name} message {i} needs 'role' and 'content'")
        if m["role"] not in CHAT_ROLES:
            raise ValueError(f"{name} message {i} has unknown role {m['role']!r}; use one of {', '.join(CHAT_ROLES)}")
        if assistant_only and m["role"] != "assistant":
            raise ValueError(f"{name} message {i} has role {m['role']!r}; completions are assistant messages")
        if not isinstance(m["content"], str) or not m["content"].strip():
            raise ValueError(f"{name} message {i} ({m['role']}) has empty content")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def row_from_json(row: Any) -> PreferenceRow:
    """One parsed JSON row -> a PreferenceRow; raises ValueError saying what is wrong.

    {"prompt": "2+2=", "chosen": " 4", "rejected": " 5"} -> PreferenceRow("2+2=", " 4", " 5")
    """
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    missing = [k for k in FIELDS if k not in row]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(repr(k) for k in missing)}; preference rows need "
                         "prompt, chosen and rejected")
    if all(isinstance(row[k], list) for k in FIELDS):
        prompt = _check_messages(row["prompt"], "prompt", assistant_only=False)
        chosen = _check_messages(row["chosen"], "chosen", assistant_only=True)
        rejected = _check_messages(row["rejected"], "rejected", assistant_only=True)
        if prompt[-1]["role"] == "assistant":
            raise ValueError("the prompt ends with an assistant message; it should end where the answer begins")
    elif all(isinstance(row[k], str) for k in FIELDS):
        for k in FIELDS:
            if not row[k].strip():
                raise ValueError(f"empty field '{k}'")
        prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
    else:
        kinds = ", ".join(f"{k}: {type(row[k]).__name__}" for k in FIELDS)
        raise ValueError(f"mixed formats ({kinds}); use strings for all three, or message lists for all three")
    if chosen == rejected:
        raise ValueError("chosen equals rejected: the row prefers nothing")
    return PreferenceRow(prompt, chosen, rejected)


def _bad_row(where: str, what: str, skip_bad_rows: bool, problems: list[str]) -> None:
    if not skip_bad_rows:
        raise UserError(f"{where}: {what}; fix the row, or set skip_bad_rows to skip such rows")
    problems.append(f"{where}: {what}")


def read_preference_jsonl(path: str | Path, skip_bad_rows: bool = False) -> tuple[list[PreferenceRow], list[str]]:
    """(rows, problems of the rows skipped): a malformed row raises UserError naming file and line, or with
    `skip_bad_rows` is skipped and counted."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; give a .jsonl file of preference rows, or 'tasks' for the built-in set")
    rows, problems = [], []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = row_from_json(json.loads(line))
            except (json.JSONDecodeError, ValueError) as e:
                what = f"bad JSON ({e.msg})" if isinstance(e, json.JSONDecodeError) else str(e)
                _bad_row(f"{path}:{lineno}", what, skip_bad_rows, problems)
                continue
            row.where = f"{path}:{lineno}"
            rows.append(row)
    if problems:
        log.info(f"{path}: skipped {len(problems)} bad row(s); first: {problems[0]}")
    if not rows:
        raise UserError(f"{path}: no usable preference rows")
    return rows, problems


def split_by_prompt(rows: list[PreferenceRow], val_fraction: float,
                    seed: int = 0) -> tuple[list[PreferenceRow], list[PreferenceRow]]:
    """Hold out a share of the distinct prompts: every row of a held-out prompt is held out, so held-out
    accuracy is measured on prompts training never saw."""
    if not 0 <= val_fraction < 1:
        raise UserError(f"val_fraction must be in [0, 1) (got {val_fraction})")
    keys = list(dict.fromkeys(json.dumps(r.prompt) for r in rows))
    random.Random(seed).shuffle(keys)
    n_val = max(1, round(len(keys) * val_fraction)) if val_fraction > 0 and len(keys) > 1 else 0
    held = set(keys[:n_val])
    return ([r for r in rows if json.dumps(r.prompt) not in held], [r for r in rows if json.dumps(r.prompt) in held])


# ---- the built-in set ---------------------------------------------------------------------------------

RAMBLING = [
    "Let me think about this carefully. There are a few ways to look at the question, and I want to be thorough "
    "before committing. After weighing it, I would say the answer is probably {answer}, but please double-check.",
    "Great question! Questions like this come up a lot, and it is worth taking a moment over them. If I had to "
    "give a single answer, it would be {answer}, although I am not entirely certain.",
    "Hmm, so the question is asking for something specific. I think it could be {answer}. Then again, there "
    "might be more to it, so treat that as a rough guess rather than a final answer.",
]


def wrong_answer(answer: str, rng: random.Random) -> str:
    """A plausible but wrong answer of the same form: "12" -> "14" (say), "elppa" -> "apple", "a" -> "e" (say)."""
    if answer.isdigit():
        value = int(answer)
        delta = rng.choice([-3, -2, -1, 1, 2, 3, 10])
        return str(value + delta if value + delta >= 0 else value - delta)
    if len(answer) == 1:
        letters = [c for c in "abcdefghijklmnopqrstuvwxyz" if c != answer.lower()]
        pick = rng.choice(letters)
        return pick.upper() if answer.isupper() else pick
    for candidate in (answer[::-1], answer.swapcase(), answer[1:] + answer[0]):
        if candidate != answer:
            return candidate
    return answer + answer[-1]


def rejected_answer(answer: str, rng: random.Random) -> str:
    """A wrong answer, a rambling right one, or a rambling wrong one (a third each)."""
    kind = rng.choice(["wrong", "rambling", "rambling_wrong"])
    if kind == "wrong":
        return wrong_answer(answer, rng)
    shown = answer if kind == "rambling" else wrong_answer(answer, rng)
    return rng.choice(RAMBLING).format(answer=shown)


def task_preferences(tasks: list[dict], seed: int = 0) -> list[PreferenceRow]:
    """Built-in tasks -> conversational preference rows: the exact answer over a wrong or rambling one."""
    rng = random.Random(seed)
    rows = []
    for i, t in enumerate(tasks):
        prompt = [m for m in t["messages"] if m["role"] != "assistant"]
        chosen = [{"role": "assistant", "content": t["answer"]}]
        rejected = [{"role": "assistant", "content": rejected_answer(t["answer"], rng)}]
        rows.append(PreferenceRow(prompt, chosen, rejected, where=f"tasks[{i}]", answer=t["answer"]))
    return rows


def load_preferences(source: str, val_fraction: float = 0.1, seed: int = 0, skip_bad_rows: bool = False,
                     n_train: int = 2000, n_heldout: int = 64) -> tuple[list[PreferenceRow], list[PreferenceRow], int]:
    """(training rows, held-out rows, rows skipped) from 'tasks' (`n_train` + `n_heldout` built-in pairs whose
    prompts never overlap) or a .jsonl file (held out by prompt, `val_fraction` of them)."""
    if source == "tasks":
        train, test = train_test_tasks(n_train, n_heldout, seed=seed)
        return task_preferences(train, seed), task_preferences(test, seed + 1), 0
    rows, problems = read_preference_jsonl(source, skip_bad_rows)
    train, held = split_by_prompt(rows, val_fraction, seed)
    return train, held, len(problems)


# ---- tokenising and collating -------------------------------------------------------------------------

def common_prefix_length(a: list[int], b: list[int]) -> int:
    """[1, 2, 3] and [1, 2, 4, 5] -> 2."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _render(tokenizer, messages: Messages, add_generation_prompt: bool = False) -> list[int]:
    return tokenizer.encode(tokenizer.render(messages, add_generation_prompt=add_generation_prompt),
                            allowed_special="all")


def tokenize_row(tokenizer, row: PreferenceRow) -> PreferenceExample:
    """Prompt and completion ids the way TRL's DPOTrainer makes them (no truncation here)."""
    if row.conversational:
        if not getattr(tokenizer, "chat_template", None):
            raise UserError(f"{row.where}: a conversational row needs a tokenizer with a chat template")
        prompt = _render(tokenizer, row.prompt, add_generation_prompt=True)
        with_chosen = _render(tokenizer, row.prompt + row.chosen)
        with_rejected = _render(tokenizer, row.prompt + row.rejected)
    else:
        eos = tokenizer.decode([tokenizer.eos_id]) if tokenizer.eos_id is not None else ""
        chosen, rejected = (c if c.endswith(eos) else c + eos for c in (row.chosen, row.rejected))
        prompt = tokenizer.encode(row.prompt, allowed_special="all")
        with_chosen = tokenizer.encode(row.prompt + chosen, allowed_special="all")
        with_rejected = tokenizer.encode(row.prompt + rejected, allowed_special="all")
    # the completion starts where prompt and prompt+completion stop agreeing: tokens can merge across the seam
    n = min(common_prefix_length(prompt, with_chosen), common_prefix_length(prompt, with_rejected))
    return PreferenceExample(prompt[:n], with_chosen[n:], with_rejected[n:])


def tokenize_preferences(tokenizer, rows: list[PreferenceRow], max_len: int,
                         skip_bad_rows: bool = False) -> tuple[list[PreferenceExample], list[PreferenceRow], int]:
    """(examples, the rows they came from, rows skipped): a prompt that fills `max_len` (the context the model
    trains on) is an error naming its row, or skipped with `skip_bad_rows`."""
    examples, kept, problems, truncated = [], [], [], 0
    for row in rows:
        ex = tokenize_row(tokenizer, row)
        if len(ex.prompt_ids) >= max_len:
            _bad_row(row.where, f"prompt too long for the context: {len(ex.prompt_ids)} tokens leave no room for "
                                f"an answer within {max_len}", skip_bad_rows, problems)
            continue
        if not ex.chosen_ids or not ex.rejected_ids:
            _bad_row(row.where, "a completion renders to no tokens", skip_bad_rows, problems)
            continue
        truncated += len(ex.prompt_ids) + max(len(ex.chosen_ids), len(ex.rejected_ids)) > max_len
        examples.append(ex)
        kept.append(row)
    if truncated:
        log.info(f"preference: {truncated} of {len(rows)} pairs were longer than {max_len} tokens; their ends were cut")
    if problems:
        log.info(f"preference: skipped {len(problems)} row(s); first: {problems[0]}")
    if not examples:
        raise UserError(f"preference: no row fits in {max_len} tokens")
    return examples, kept, len(problems)


def collate_preference(examples: list[PreferenceExample], pad_id: int,
                       max_len: int | None = None) -> dict[str, torch.Tensor]:
    """Chosen rows then rejected rows, each prompt + completion cut to `max_len` tokens (keep the start),
    shifted by one and right-padded: idx, targets, attn_mask, all (2B, T). targets are -100 except where the
    next token is a completion token."""
    seqs, masks = [], []
    for which in ("chosen_ids", "rejected_ids"):
        for ex in examples:
            completion = getattr(ex, which)
            ids = (ex.prompt_ids + completion)[:max_len]
            is_completion = ([False] * len(ex.prompt_ids) + [True] * len(completion))[:max_len]
            seqs.append(ids)
            masks.append(is_completion)
    T = max(len(s) for s in seqs) - 1
    idx = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    targets = torch.full((len(seqs), T), IGNORE_INDEX, dtype=torch.long)
    attn_mask = torch.zeros(len(seqs), T, dtype=torch.bool)
    for b, (ids, is_completion) in enumerate(zip(seqs, masks, strict=True)):
        n = len(ids) - 1  # position t predicts token t + 1
        ids_t = torch.tensor(ids)
        idx[b, :n] = ids_t[:-1]
        targets[b, :n] = torch.where(torch.tensor(is_completion[1:]), ids_t[1:], IGNORE_INDEX)
        attn_mask[b, :n] = True
    return {"idx": idx, "targets": targets, "attn_mask": attn_mask}


def collate_sequences(examples: list[PreferenceExample], pad_id: int,
                      max_len: int | None = None) -> dict[str, torch.Tensor]:
    """Whole sequences for a reward model, chosen rows then rejected rows, right-padded, unshifted: idx and
    attn_mask (2B, T); the score is read at each row's last real token."""
    seqs = [(ex.prompt_ids + getattr(ex, which))[:max_len] for which in ("chosen_ids", "rejected_ids")
            for ex in examples]
    T = max(len(s) for s in seqs)
    idx = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    attn_mask = torch.zeros(len(seqs), T, dtype=torch.bool)
    for b, ids in enumerate(seqs):
        idx[b, :len(ids)], attn_mask[b, :len(ids)] = torch.tensor(ids), True
    return {"idx": idx, "attn_mask": attn_mask}


def batch_order(n: int, batch_size: int, seed: int) -> list[list[int]]:
    """Example indices of one epoch, shuffled by seed, cut into batches (the last may be smaller)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]
