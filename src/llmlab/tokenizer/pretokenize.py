"""Pre-tokenisation for training: stream text, split it with the pattern, count distinct chunks.

Files are read in blocks of about a megabyte, never as one string, and the
blocks are split and counted on every core. A block ends just before a letter
that follows a newline: no chunk of the built-in patterns spans such a point,
so counting block by block gives exactly the counts of the whole text. This
file does not train or encode; it only turns text into `{chunk bytes: count}`.

The worker processes are forked on Linux and spawned elsewhere. Only a few
blocks are in flight at a time, so memory stays bounded whatever the corpus
size. If the workers cannot start (a spawned worker re-imports `__main__`, which
fails for a script read from stdin or one without an `if __name__ == "__main__":`
guard), the blocks are counted again in this process; the result is the same.
"""

import multiprocessing as mp
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from pathlib import Path

import regex
from tqdm import tqdm

from llmlab.common import log
from llmlab.common.errors import UserError

BLOCK_CHARS = 1 << 20
POLL_SECONDS = 5.0  # how often a waiting pool checks for progress
STALL_SECONDS = 600.0  # no block finished for this long: the workers are stuck, give up
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

    def jobs() -> Iterator[tuple[str, str, bool]]:
        for source in [*(iter_text_blocks(t) for t in texts), *(iter_blocks(f) for f in files)]:
            for block, more in source:
                yield pattern, block, more

    counts: Counter = Counter()
    bar = tqdm(total=total_bytes, desc="pre-tokenising", unit="B", unit_scale=True, disable=not progress)
    if workers == 1 or total_bytes < 2 * BLOCK_CHARS:
        _count_here(jobs(), counts, bar)
    else:
        try:
            _count_in_pool(jobs(), workers, counts, bar)
        except BrokenProcessPool:
            log.info("pre-tokenising: worker processes failed to start or died; counting in this process instead")
            counts.clear()
            bar.reset()
            _count_here(jobs(), counts, bar)
    bar.close()
    return {chunk.encode("utf-8"): n for chunk, n in counts.items()}


def _count_here(jobs: Iterator[tuple[str, str, bool]], counts: Counter, bar: tqdm) -> None:
    for c, n in map(count_block, jobs):
        counts.update(c)
        bar.update(n)


def pool_context() -> mp.context.BaseContext:
    """Fork on Linux: the workers only run `regex` (no threads, no GPU), and a forked worker does not
    re-import `__main__`, so scripts without a main guard, or read from stdin, work. Spawn elsewhere."""
    if sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods():
        return mp.get_context("fork")
    return mp.get_context("spawn")


def _count_in_pool(jobs: Iterator[tuple[str, str, bool]], workers: int, counts: Counter, bar: tqdm) -> None:
    """Count on `workers` processes, at most two blocks per worker in flight. Raises
    `BrokenProcessPool` when a worker cannot start or dies (the caller then counts here)."""
    executor = ProcessPoolExecutor(workers, mp_context=pool_context())
    finished = False
    try:
        pending = {executor.submit(count_block, job) for job in islice(jobs, 2 * workers)}
        last_progress = time.monotonic()
        while pending:
            done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            if not done:
                if time.monotonic() - last_progress > STALL_SECONDS:
                    raise RuntimeError(f"pre-tokenising: no block finished in {STALL_SECONDS:.0f} s; the "
                                       f"worker processes look stuck (pass num_workers=1 to count in one process)")
                continue
            last_progress = time.monotonic()
            for future in done:
                c, n = future.result()
                counts.update(c)
                bar.update(n)
            pending |= {executor.submit(count_block, job) for job in islice(jobs, len(done))}
        finished = True
    finally:
        if not finished:  # an error or a stall: stop the workers rather than wait for their blocks
            # (`executor.terminate_workers()` only exists from Python 3.14)
            for process in list((getattr(executor, "_processes", None) or {}).values()):
                process.terminate()
        executor.shutdown(wait=finished, cancel_futures=True)
