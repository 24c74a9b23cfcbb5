"""Instruction data for supervised fine-tuning (SFT): read, validate, render, mask, pack, collate.

Rows are JSON lines in one of three shapes, all turned into chat messages:

    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}
    {"instruction": "...", "input": "...", "output": "..."}          (Alpaca; input optional)
    {"prompt": "...", "completion": "..."}

A conversation is rendered with the tokenizer's chat template and the loss is
kept only on assistant turns (their content and the template's end-of-turn
marker); every other target is -100. Short examples are packed into rows of
`seq_len` tokens, each keeping its own positions and a block-diagonal mask so
attention never crosses examples; or padded one per row by `collate_padded`.
This file knows token ids and text, not models; the training run lives in
`llmlab.recipes.finetune`.
"""

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llmlab.common import log
from llmlab.common.constants import CHAT_ROLES, IGNORE_INDEX
from llmlab.common.errors import UserError
from llmlab.data.reasoning import train_test_cot
from llmlab.data.tasks import train_test_tasks

Messages = list[dict[str, str]]


@dataclass
class SFTData:
    """Parsed conversations plus what was skipped (with --skip-bad-rows) and why."""

    examples: list[Messages]
    skipped: int = 0
    problems: list[str] = field(default_factory=list)


def row_to_messages(row: Any) -> Messages:
    """One parsed JSON row -> messages; raises ValueError saying what is wrong.

    {"prompt": "2+2?", "completion": "4"} -> [{"role": "user", "content": "2+2?"},
                                              {"role": "assistant", "content": "4"}]
    """
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list")
    elif "instruction" in row or "output" in row:
        for key in ("instruction", "output"):
            if key not in row:
                raise ValueError(f"missing field '{key}' (Alpaca rows need instruction and output)")
        extra = row.get("input") or ""
        user = row["instruction"] + ("\n\n" + extra if isinstance(extra, str) and extra.strip() else "")
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]
    elif "prompt" in row or "completion" in row:
        for key in ("prompt", "completion"):
            if key not in row:
                raise ValueError(f"missing field '{key}' (prompt/completion rows need both)")
        messages = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
    else:
        raise ValueError(f"missing field: expected 'messages', 'instruction'+'output' or 'prompt'+'completion', "
                         f"got keys {sorted(row)}")
    return validate_messages(messages)


def validate_messages(messages: list) -> Messages:
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} needs 'role' and 'content'")
        if m["role"] not in CHAT_ROLES:
            raise ValueError(f"message {i} has unknown role {m['role']!r}; use one of {', '.join(CHAT_ROLES)}")
        if not isinstance(m["content"], str) or not m["content"].strip():
            raise ValueError(f"message {i} ({m['role']}) has empty content")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in out):
        raise ValueError("no assistant message: nothing to learn from")
    if out[0]["role"] == "assistant":
        raise ValueError("the first message is the assistant's; start with a system or user message")
    return out


def read_sft_jsonl(path: str | Path, skip_bad_rows: bool = False) -> SFTData:
    """Read a .jsonl file of rows; a malformed row raises UserError naming the file and line, or is
    skipped and counted when `skip_bad_rows`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; give a .jsonl file of SFT rows, or 'tasks' for the built-in set")
    data = SFTData(examples=[])
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                data.examples.append(row_to_messages(json.loads(line)))
            except (json.JSONDecodeError, ValueError) as e:
                what = f"bad JSON ({e.msg})" if isinstance(e, json.JSONDecodeError) else str(e)
                if not skip_bad_rows:
                    raise UserError(f"{path}:{lineno}: {what}; fix the row, or set skip_bad_rows to skip such rows"
                                    ) from None
                data.skipped += 1
                data.problems.append(f"{path}:{lineno}: {what}")
    if data.skipped:
        log.info(f"{path}: skipped {data.skipped} bad row(s); first: {data.problems[0]}")
    if not data.examples:
        raise UserError(f"{path}: no usable rows")
    return data


def read_hf_dataset(name: str, split: str = "train", skip_bad_rows: bool = False) -> SFTData:
    """Rows from a Hugging Face dataset by name (needs `datasets` and a network or a local cache)."""
    try:
        import datasets
    except ImportError:
        raise UserError(f"{name}: not a local file; reading HF datasets needs `pip install datasets`") from None
    rows = datasets.load_dataset(name, split=split)
    data = SFTData(examples=[])
    for i, row in enumerate(rows):
        try:
            data.examples.append(row_to_messages(dict(row)))
        except ValueError as e:
            if not skip_bad_rows:
                raise UserError(f"{name}[{split}] row {i}: {e}; fix it, or set skip_bad_rows to skip such rows"
                                ) from None
            data.skipped += 1
            data.problems.append(f"{name} row {i}: {e}")
    return data


def load_conversations(source: str, val_fraction: float = 0.1, seed: int = 0, skip_bad_rows: bool = False,
                       n_train: int = 2000, n_heldout: int = 64) -> tuple[list[Messages], list[Messages], int]:
    """(training conversations, held-out conversations, rows skipped) from 'tasks' (the built-in set,
    `n_train` + `n_heldout`), a .jsonl file, or a Hugging Face dataset name (split by `val_fraction`)."""
    if source == "tasks":
        train, test = train_test_tasks(n_train, n_heldout, seed=seed)
        return [t["messages"] for t in train], [t["messages"] for t in test], 0
    if source == "tasks-cot":  # the arithmetic and conversion tasks with worked steps (llmlab.data.reasoning)
        train, test = train_test_cot(n_train, n_heldout, seed=seed)
        return [t["messages"] for t in train], [t["messages"] for t in test], 0
    if Path(source).exists() or source.endswith(".jsonl"):
        data = read_sft_jsonl(source, skip_bad_rows)
    else:
        data = read_hf_dataset(source, skip_bad_rows=skip_bad_rows)
    train, val = split_validation(data.examples, val_fraction, seed)
    return train, val, data.skipped


def tokenize_messages(tokenizer, messages: Messages) -> tuple[list[int], list[int]]:
    """Render with the chat template and tokenise; labels equal ids on assistant turns, -100 elsewhere.

    Each assistant turn's span is found by rendering the conversation up to it twice: with a
    generation prompt (everything before the answer) and with the answer (everything through its
    end-of-turn marker); the difference is what the model must learn to write.
    """
    ids: list[int] = []
    labels: list[int] = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = tokenizer.render(messages[:i], add_generation_prompt=True)
        through = tokenizer.render(messages[:i + 1])
        if not before.startswith(done) or not through.startswith(before):
            raise UserError(f"tokenizer {getattr(tokenizer, 'name', '')}: its chat template does not render "
                            "conversations as growing prefixes; cannot find the assistant tokens to train on")
        prompt_ids = tokenizer.encode(before[len(done):], allowed_special="all")
        answer_ids = tokenizer.encode(through[len(before):], allowed_special="all")
        ids += prompt_ids + answer_ids
        labels += [IGNORE_INDEX] * len(prompt_ids) + answer_ids
        done = through
    return ids, labels


@dataclass
class Example:
    """One tokenised conversation, already shifted: the model reads idx and predicts targets."""

    idx: list[int]
    targets: list[int]


def make_example(ids: list[int], labels: list[int], max_len: int) -> Example:
    """Shift by one (token t predicts t+1) and keep the first max_len positions."""
    return Example(ids[:-1][:max_len], labels[1:][:max_len])


def tokenize_dataset(tokenizer, conversations: list[Messages], max_len: int) -> list[Example]:
    examples, truncated = [], 0
    for messages in conversations:
        ids, labels = tokenize_messages(tokenizer, messages)
        truncated += len(ids) - 1 > max_len
        ex = make_example(ids, labels, max_len)
        if any(t != IGNORE_INDEX for t in ex.targets):
            examples.append(ex)
    if truncated:
        log.info(f"sft: {truncated} of {len(conversations)} examples were longer than {max_len} tokens and cut")
    if not examples:
        raise UserError(f"sft: no example keeps an assistant token within {max_len} tokens; allow longer rows")
    return examples


def split_validation(items: list, val_fraction: float, seed: int = 0) -> tuple[list, list]:
    """Shuffle deterministically and hold out a fraction (at least one item when the fraction is > 0)."""
    if not 0 <= val_fraction < 1:
        raise UserError(f"val_fraction must be in [0, 1) (got {val_fraction})")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(items) * val_fraction)) if val_fraction > 0 and len(items) > 1 else 0
    return [items[i] for i in order[n_val:]], [items[i] for i in order[:n_val]]


def pack(examples: list[Example], seq_len: int) -> list[list[Example]]:
    """Greedily group consecutive examples into rows of at most seq_len tokens.

    lengths [5, 4, 3, 6] with seq_len 10 -> rows [[5, 4], [3, 6]].
    """
    rows: list[list[Example]] = [[]]
    used = 0
    for ex in examples:
        if used + len(ex.idx) > seq_len and rows[-1]:
            rows.append([])
            used = 0
        rows[-1].append(ex)
        used += len(ex.idx)
    return rows


def collate_packed(rows: list[list[Example]], seq_len: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Packed rows -> idx, targets, positions (B, T) and attn_mask (B, T, T), True where query and key
    belong to the same example (the model adds causality). Padding sees only itself."""
    B, T = len(rows), seq_len
    idx = torch.full((B, T), pad_id, dtype=torch.long)
    targets = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros(B, T, dtype=torch.long)
    doc = torch.full((B, T), -1, dtype=torch.long)  # which example each position belongs to
    for b, row in enumerate(rows):
        start = 0
        for d, ex in enumerate(row):
            n = len(ex.idx)
            idx[b, start:start + n] = torch.tensor(ex.idx)
            targets[b, start:start + n] = torch.tensor(ex.targets)
            positions[b, start:start + n] = torch.arange(n)
            doc[b, start:start + n] = d
            start += n
    attn_mask = (doc[:, :, None] == doc[:, None, :]) & (doc[:, None, :] >= 0)  # (B, T, T)
    return {"idx": idx, "targets": targets, "positions": positions, "attn_mask": attn_mask}


def collate_padded(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """One example per row, right-padded to the longest: idx, targets (B, T) and a key mask (B, T)."""
    T = max(len(ex.idx) for ex in examples)
    idx = torch.full((len(examples), T), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)
    attn_mask = torch.zeros(len(examples), T, dtype=torch.bool)
    for b, ex in enumerate(examples):
        n = len(ex.idx)
        idx[b, :n], targets[b, :n], attn_mask[b, :n] = torch.tensor(ex.idx), torch.tensor(ex.targets), True
    return {"idx": idx, "targets": targets, "attn_mask": attn_mask}


def make_batches(examples: list[Example], batch_size: int, seq_len: int, pad_id: int, packed: bool = True,
                 seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """One epoch of batches, shuffled by seed (packed rows, or padded single examples)."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    shuffled = [examples[i] for i in order]
    if packed:
        rows = pack(shuffled, seq_len)
        return [collate_packed(rows[i:i + batch_size], seq_len, pad_id) for i in range(0, len(rows), batch_size)]
    return [collate_padded(shuffled[i:i + batch_size], pad_id) for i in range(0, len(shuffled), batch_size)]


def as_model_batch(batch: dict[str, torch.Tensor], device: torch.device | str | None = None) -> tuple:
    """A collated batch the way the loop and held-out loss take it: (idx, targets, {positions, attn_mask})."""
    batch = {k: v.to(device) for k, v in batch.items()} if device is not None else batch
    return batch["idx"], batch["targets"], {k: batch[k] for k in ("positions", "attn_mask") if k in batch}
