"""Where text comes from: the default corpus that ships with Python, or the user's files.

A document is a (name, text) pair. The train/validation split is by document
(a stable hash of its name), so validation text is never seen in training.
Reads .txt/.md/.py (and any other text file), .jsonl (a `text` field per row)
and .parquet (a `text` column); folders are walked. Does not clean or dedupe.
"""

import hashlib
import json
import random
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from llmlab.common.errors import UserError

Document = tuple[str, str]
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}


def default_corpus() -> list[Document]:
    """The standard library's own .py sources (tests left out) plus pydoc's topic help texts."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIP_DIRS.isdisjoint(rel.parts):
            docs.append((f"stdlib/{rel.as_posix()}", path.read_text(encoding="utf-8", errors="replace")))
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        topics = {}
    docs += [(f"pydoc/{name}", text) for name, text in sorted(topics.items())]
    return [d for d in docs if d[1].strip()]


def jsonl_text_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) for each non-blank line of a JSONL file whose rows carry a string 'text'."""
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg}); fix or remove the line") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise UserError(f"{path}:{lineno}: each row needs a string field 'text'")
            yield lineno, row


def _read_jsonl(path: Path, name: str) -> Iterator[Document]:
    for lineno, row in jsonl_text_rows(path):
        yield f"{name}:{lineno}", row["text"]


def _read_parquet(path: Path, name: str) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["text"])
    except Exception as e:
        raise UserError(f"{path}: cannot read a 'text' column from this Parquet file ({e})") from None
    for i, text in enumerate(table.column("text").to_pylist()):
        if isinstance(text, str):
            yield f"{name}#{i}", text


def _read_file(path: Path, name: str) -> Iterator[Document]:
    if path.suffix == ".jsonl":
        yield from _read_jsonl(path, name)
    elif path.suffix == ".parquet":
        yield from _read_parquet(path, name)
    else:
        data = path.read_bytes()
        if b"\x00" in data[:8192]:
            return  # binary file in a folder: not text
        yield name, data.decode("utf-8", errors="replace")


def read_documents(paths: list[str]) -> list[Document]:
    """Documents from files and folders; a clear error for missing paths or no text at all.

    Documents are named relative to the path given (`corpus/a.txt`, `rows.jsonl:7`), so the split does not
    depend on where the corpus lies on disk.
    """
    docs: list[Document] = []
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"{p}: no such file or folder")
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            named = [(f, f"{p.name}/{f.relative_to(p).as_posix()}") for f in files]
        else:
            named = [(p, p.name)]
        for f, name in named:
            docs.extend(d for d in _read_file(f, name) if d[1].strip())
    if not docs:
        raise UserError(f"{' '.join(str(p) for p in paths)}: no text found (empty files, or no 'text' field); "
                        "give files with text in them")
    return docs


def is_validation(name: str, val_fraction: float) -> bool:
    """A stable per-document coin flip: the same name always lands in the same split."""
    h = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big")
    return h / 2**64 < val_fraction


def split_documents(docs: list[Document], val_fraction: float = 0.05) -> tuple[list[Document], list[Document]]:
    train = [d for d in docs if not is_validation(d[0], val_fraction)]
    val = [d for d in docs if is_validation(d[0], val_fraction)]
    if not val and len(docs) > 1:  # tiny corpora: hold out the last document rather than nothing
        train, val = docs[:-1], docs[-1:]
    if not train or not val:
        raise UserError("the corpus has a single document: give at least two so one can be held out for validation")
    return train, val


def leading_text(docs: list[Document], max_chars: int) -> str:
    """The first documents, whole, until about `max_chars` characters: a sample to train a tokenizer on."""
    texts, total = [], 0
    for _, text in docs:
        if total >= max_chars:
            break
        texts.append(text)
        total += len(text)
    return "".join(texts)


def sample_documents(docs: list[Document], max_chars: int, seed: int = 0) -> list[Document]:
    """Whole documents in a seeded random order until about `max_chars` characters: a part of a corpus that
    looks like all of it. The first documents of a sorted corpus are one corner of it: the standard library's
    first 4M characters (modules a to e) are 29% codec tables (encodings/cp*.py), text like no other file."""
    order = list(docs)
    random.Random(seed).shuffle(order)
    out, total = [], 0
    for doc in order:
        if total >= max_chars:
            break
        out.append(doc)
        total += len(doc[1])
    return out
