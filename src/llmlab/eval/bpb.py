"""Bits per byte on held-out text, and the same text under gzip -9 and xz -9.

Loss per token depends on the tokenizer (bigger tokens, bigger loss); loss per
byte of the original text does not, so it compares models with different
vocabularies, and compressors too. Special tokens (the end-of-text marker)
cost the model nats but stand for no bytes, so they only make the model look
worse: the comparison is conservative.
"""

import gzip
import lzma
import math
from pathlib import Path

import torch

from llmlab.common.constants import IGNORE_INDEX
from llmlab.data.loader import sequential_windows
from llmlab.eval.loss import heldout_loss


def bits_per_byte(total_nats: float, total_bytes: int) -> float:
    """Loss in a unit that does not depend on the tokenizer: nats over all targets -> bits per UTF-8 byte."""
    return total_nats / math.log(2) / total_bytes


def token_byte_lengths(tokenizer) -> torch.Tensor:
    """How many UTF-8 bytes each token id stands for (0 for special tokens)."""
    special = set(tokenizer.special_tokens.values())
    return torch.tensor([0 if i in special else len(tokenizer.id_to_token_bytes(i))
                         for i in range(tokenizer.vocab_size)], dtype=torch.long)


def model_bpb(model: torch.nn.Module, tokenizer, data_dir: str | Path, batch_size: int = 16,
              max_tokens: int | None = None, autocast_dtype: torch.dtype | None = None,
              seq_len: int | None = None) -> dict:
    """Bits per byte of `model` over the validation split, every token predicted once, in windows of
    `seq_len` tokens (default: the model's context)."""
    lengths = token_byte_lengths(tokenizer)
    n_bytes = 0
    batches = []
    windows = sequential_windows(data_dir, "val", batch_size, seq_len or model.config.seq_len, max_tokens)
    for idx, targets in windows:
        n_bytes += int(lengths[targets.clamp(min=0)][targets != IGNORE_INDEX].sum())
        batches.append((idx, targets))
    nats, n_tokens = heldout_loss(model, batches, autocast_dtype)
    return {"val_bpb": bits_per_byte(nats, n_bytes), "val_loss": nats / n_tokens, "val_tokens": n_tokens,
            "val_bytes": n_bytes}


def compressor_bpb(data: bytes) -> dict:
    """Bits per byte of `data` under gzip -9 and xz -9 (LZMA preset 9)."""
    return {"gzip_bpb": 8 * len(gzip.compress(data, compresslevel=9)) / len(data),
            "xz_bpb": 8 * len(lzma.compress(data, preset=9)) / len(data)}
