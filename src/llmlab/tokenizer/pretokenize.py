"""Pre-tokenisation for training: stream text, split it with the pattern, count distinct chunks.

Files are read in blocks of about a megabyte, never as one string, and the
blocks are split and counted on every core. A block ends just before a letter
that follows a newline: no chunk of the built-in patterns spans such a point,
so counting block by block gives exactly the counts of the whole text. This
file does not train or encode; it only turns text into `{chunk bytes: count}`.
"""

import multiprocessing as mp
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import regex
from tqdm import tqdm

from llmlab.common.errors import UserError

BLOCK_CHARS = 1 << 20
_CUT = regex.compile(r"\n(?=\p{L})")


def cut_point(text: str) -> int:
    """Index of the last safe place to end a block (just before a letter that follows '\\n'), or -1.

    >>> cut_point("ab\\ncd\\n12")
    3
    """
    start = max(0, len(text) - BLOCK_CHARS // 2)
    last = -1
    for m in _CUT.finditer(text, start):
        last = m.end()
    if last == -1 and start > 0:
        for m in _CUT.finditer(text):
            last = m.end()
    return last


def count_block(args: tuple[str, str, bool]) -> tuple[Counter, int]:
    """Count the chunks of one block. When `more` is true the next block starts with a letter;
    we append it so lookaheads see the same text as in the whole file, then drop its chunk."""
    pattern, block, more = args
    chunks = regex.findall(pattern, block + "a" if more else block)
    if more:
        chunks.pop()
    return Counter(chunks), len(block)


def iter_blocks(path: Path) -> Iterator[tuple[str, bool]]:
    """Yield (block, more) from a UTF-8 file, each block cut at a safe point."""
    carry = ""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            while piece := f.read(BLOCK_CHARS):
                carry += piece
                cut = cut_point(carry)
                if cut > 0:
                    yield carry[:cut], True
                    carry = carry[cut:]
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); convert it to "
                        "UTF-8") from None
    if carry:
        yield carry, False


def iter_text_blocks(text: str) -> Iterator[tuple[str, bool]]:
    """Yield (block, more) from an in-memory string, each block cut at a safe point."""
    while len(text) > BLOCK_CHARS:
        cut = cut_point(text[: BLOCK_CHARS * 2])
        if cut <= 0:
            break
        yield text[:cut], True
        text = text[cut:]
    if text:
        yield text, False


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given, directories expanded to their files (sorted, skipping hidden folders,
    `__pycache__` and compiled `.pyc`); missing paths are errors."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(sorted(
                q for q in p.rglob("*")
                if q.is_file() and q.suffix != ".pyc"
                and not any(part.startswith(".") or part == "__pycache__" for part in q.relative_to(p).parts)
            ))
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"{p}: no such file or directory; pass existing text files or a folder")
    return files


def count_chunks(
    texts: list[str], files: list[Path], pattern: str, progress: bool = False, num_workers: int = 0
) -> dict[bytes, int]:
    """`{chunk utf-8 bytes: count}` over in-memory `texts` and `files`, using `num_workers` processes
    (0 = every core). Small inputs are counted in this process."""
    total_bytes = sum(len(t) for t in texts) + sum(f.stat().st_size for f in files)
    workers = num_workers or os.cpu_count() or 1
    jobs = (
        (pattern, block, more)
        for source in [*(iter_text_blocks(t) for t in texts), *(iter_blocks(f) for f in files)]
        for block, more in source
    )
    counts: Counter = Counter()
    bar = tqdm(total=total_bytes, desc="pre-tokenising", unit="B", unit_scale=True, disable=not progress)
    if workers == 1 or total_bytes < 2 * BLOCK_CHARS:
        for c, n in map(count_block, jobs):
            counts.update(c)
            bar.update(n)
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            for c, n in pool.imap_unordered(count_block, jobs):
                counts.update(c)
                bar.update(n)
    bar.close()
    return {chunk.encode("utf-8"): n for chunk, n in counts.items()}
