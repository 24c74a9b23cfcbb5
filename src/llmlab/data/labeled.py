"""Labelled texts for classification: `{"text": ..., "label": ...}` rows in, padded batches out.

Labels are any strings (ints are read as their text). The built-in set labels
each question of the generated task set (`tasks.py`) with its family:
arithmetic, conversion or string. Batches are right-padded, so the class is
read at each row's last real token (`llmlab.infer.classify`).
"""

import json
import random
from pathlib import Path

import torch

from llmlab.common.errors import UserError
from llmlab.data.tasks import make_tasks


def read_labeled_jsonl(path: str | Path, skip_bad_rows: bool = False) -> tuple[list[tuple[str, str]], int]:
    """(text, label) pairs and the number of rows skipped; a bad row names file and line, or is skipped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; give a .jsonl of {{\"text\", \"label\"}} rows, or 'tasks'")
    rows, skipped = [], 0
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "text" not in row or "label" not in row:
                raise ValueError("missing field: rows need 'text' and 'label'")
            if not isinstance(row["text"], str) or not row["text"].strip():
                raise ValueError("empty text")
            rows.append((row["text"], str(row["label"])))
        except (json.JSONDecodeError, ValueError) as e:
            what = f"bad JSON ({e.msg})" if isinstance(e, json.JSONDecodeError) else str(e)
            if not skip_bad_rows:
                raise UserError(f"{path}:{lineno}: {what}; fix the row, or set skip_bad_rows to skip such rows"
                                ) from None
            skipped += 1
    if not rows:
        raise UserError(f"{path}: no usable rows")
    return rows, skipped


def load_labeled(source: str, n_builtin: int = 600, seed: int = 0,
                 skip_bad_rows: bool = False) -> tuple[list[tuple[str, str]], int]:
    """(text, label) pairs from 'tasks' (built-in: `n_builtin` questions labelled by family) or a .jsonl file."""
    if source == "tasks":
        return [(t["messages"][1]["content"], t["family"]) for t in make_tasks(n_builtin, seed)], 0
    return read_labeled_jsonl(source, skip_bad_rows)


def encode_texts(tokenizer, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts -> right-padded ids (B, T) and mask (B, T), each cut to its first max_len tokens."""
    ids = [tokenizer.encode(text)[:max_len] or [tokenizer.pad_id] for text in texts]
    return tokenizer.pad(ids, side="right")


def labeled_batches(tokenizer, rows: list[tuple[str, str]], classes: list[str], batch_size: int, max_len: int,
                    seed: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(idx (B, T), labels (B,), attn_mask (B, T)) batches; shuffled when seed is given."""
    order = list(range(len(rows)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    out = []
    for i in range(0, len(order), batch_size):
        chunk = [rows[j] for j in order[i:i + batch_size]]
        idx, mask = encode_texts(tokenizer, [text for text, _ in chunk], max_len)
        out.append((idx, torch.tensor([classes.index(label) for _, label in chunk]), mask))
    return out
