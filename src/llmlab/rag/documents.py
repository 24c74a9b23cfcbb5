"""Documents for retrieval: a folder (or one file) of .txt, .md, .py or .jsonl files, each text with its source.

A document's `source` is its path relative to the folder given (`guide/intro.md`), so an index built on one
machine names the same sources on another. A .jsonl file gives one document per row with a string `text`;
its source is `path:line` unless the row names its own `source`. Other fields of a row are kept as metadata.
Hidden files and folders and `__pycache__` are skipped; binary files are an error only when named directly.
Pairs from the data stage (`llmlab.data.sources`' (name, text) documents) come in through `from_pairs`.
This file reads text; cutting it into chunks is `chunking.py`'s job.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmlab.common.errors import UserError
from llmlab.data.sources import jsonl_text_rows

SUFFIXES = (".txt", ".md", ".py", ".jsonl")


@dataclass
class Document:
    source: str  # path relative to the folder given, `file.jsonl:7` for a row
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


def _jsonl_rows(path: Path, rel: str) -> list[Document]:
    docs = []
    for lineno, row in jsonl_text_rows(path):
        source = row.get("source") if isinstance(row.get("source"), str) else f"{rel}:{lineno}"
        meta = {k: v for k, v in row.items() if k not in ("text", "source")}
        docs.append(Document(source, row["text"], meta))
    return docs


def _read_text(path: Path, strict: bool) -> str | None:
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        if strict:
            raise UserError(f"{path}: a binary file, not text; give .txt, .md, .py or .jsonl files")
        return None
    return data.decode("utf-8", errors="replace")


def read_documents(path: str | Path) -> list[Document]:
    """Every .txt/.md/.py/.jsonl document under a folder (sorted by path), or the one file given."""
    root = Path(path).expanduser()
    if not root.exists():
        raise UserError(f"{root}: no such file or folder; give a folder of .txt, .md, .py or .jsonl files")
    if root.is_file():
        if root.suffix not in SUFFIXES:
            raise UserError(f"{root}: unsupported file type {root.suffix or '(none)'}; use {', '.join(SUFFIXES)}")
        files, base = [root], root.parent
    else:
        files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix in SUFFIXES
                       and not any(p.startswith(".") or p == "__pycache__" for p in f.relative_to(root).parts))
        base = root
    docs: list[Document] = []
    for f in files:
        rel = f.relative_to(base).as_posix()
        if f.suffix == ".jsonl":
            docs += _jsonl_rows(f, rel)
        else:
            text = _read_text(f, strict=root.is_file())
            if text is not None:
                docs.append(Document(rel, text))
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise UserError(f"{root}: no text found in .txt, .md, .py or .jsonl files; give a folder with documents")
    return docs


def from_pairs(pairs: list[tuple[str, str]]) -> list[Document]:
    """Documents from (name, text) pairs, as `llmlab.data.sources` and the built-in knowledge set give them."""
    return [Document(name, text) for name, text in pairs if text.strip()]
