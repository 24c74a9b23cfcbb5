"""Tokenise documents once into flat binary shards plus a JSON manifest.

Layout of a data folder: `train_000.bin, train_001.bin, ...`, `val_000.bin`,
`manifest.json`. Each .bin is raw little-endian token ids (uint16 when the
vocabulary fits, else uint32); every document starts with the end-of-text token
so the model learns where texts begin. The tokenizer is saved beside the shards.
"""

from pathlib import Path

import numpy as np

from llmlab.common import log
from llmlab.common.constants import TOKENIZER_FILE
from llmlab.common.errors import UserError
from llmlab.common.io import atomic_write, write_json_atomic, write_text_atomic
from llmlab.data.loader import read_manifest
from llmlab.data.sources import Document, leading_text
from llmlab.tokenizer import Tokenizer


def token_dtype(vocab_size: int) -> np.dtype:
    if vocab_size <= 2**16:
        return np.dtype(np.uint16)
    if vocab_size <= 2**32:
        return np.dtype(np.uint32)
    raise UserError(f"vocabulary of {vocab_size} tokens does not fit in uint32 shards; use a smaller vocabulary")


def write_shards(docs: list[Document], tokenizer, out_dir: str | Path, split: str,
                 shard_tokens: int = 50_000_000) -> dict:
    """Encode `docs` and write `{split}_NNN.bin` files; return this split's manifest entry."""
    out_dir = Path(out_dir)
    dtype = token_dtype(tokenizer.vocab_size)
    eot = tokenizer.eos_id
    texts = [text for _, text in docs]
    flat = _flatten(tokenizer.encode_batch(texts), eot)
    files = []
    for i, start in enumerate(range(0, max(len(flat), 1), shard_tokens)):
        name = f"{split}_{i:03d}.bin"
        chunk = flat[start:start + shard_tokens].astype(dtype)
        atomic_write(out_dir / name, chunk.tofile)
        files.append({"file": name, "tokens": int(len(chunk))})
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {"files": files, "tokens": int(len(flat)), "documents": len(docs), "bytes": n_bytes}


def _flatten(ids_per_doc: list[list[int]], eot: int | None) -> np.ndarray:
    """[[5, 6], [7]] with eot=0 -> [0, 5, 6, 0, 7]: one flat stream, each document after an eot."""
    lengths = [len(ids) + (eot is not None) for ids in ids_per_doc]
    flat = np.empty(sum(lengths), dtype=np.int64)
    pos = 0
    for ids in ids_per_doc:
        if eot is not None:
            flat[pos] = eot
            pos += 1
        flat[pos:pos + len(ids)] = ids
        pos += len(ids)
    return flat


def prepare(train_docs: list[Document], val_docs: list[Document], tokenizer, out_dir: str | Path,
            shard_tokens: int = 50_000_000, val_text_file: bool = True) -> dict:
    """Write both splits, the tokenizer and the manifest; the manifest goes last, so its presence means done."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out_dir / TOKENIZER_FILE)
    manifest = {
        "format": "llmlab-shards",
        "version": 1,
        "dtype": token_dtype(tokenizer.vocab_size).name,
        "vocab_size": tokenizer.vocab_size,
        "eot_id": tokenizer.eos_id,
        "tokenizer": TOKENIZER_FILE,
        "train": write_shards(train_docs, tokenizer, out_dir, "train", shard_tokens),
        "val": write_shards(val_docs, tokenizer, out_dir, "val", shard_tokens),
    }
    if val_text_file:  # the exact held-out text, for compressor baselines
        write_text_atomic(out_dir / "val.txt", "".join(text for _, text in val_docs))
    write_json_atomic(out_dir / "manifest.json", manifest)
    return manifest


def prepared_folder(data: str | None, out_dir: str | Path, documents, vocab_size: int, tokenizer_chars: int,
                    progress: bool = True) -> Path:
    """The data folder an experiment trains on: `data` (a prepared folder, checked) if given, else `out_dir`,
    prepared once from `documents()` -> (train_docs, val_docs) with a BPE tokenizer trained on the first
    `tokenizer_chars` characters of the training split, and reused by later runs (the manifest marks it done)."""
    if data:
        read_manifest(data)  # a one-line error if it is not a prepared folder
        return Path(data)
    out_dir = Path(out_dir)
    if not (out_dir / "manifest.json").is_file():
        train_docs, val_docs = documents()
        sample = leading_text(train_docs, tokenizer_chars)
        log.info(f"data: a {vocab_size}-token BPE tokenizer on {len(sample) / 1e6:.1f}M characters, then shards")
        prepare(train_docs, val_docs, Tokenizer.train(sample, vocab_size, progress=progress), out_dir)
    return out_dir
