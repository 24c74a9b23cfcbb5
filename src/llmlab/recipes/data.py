"""`llmlab data clean|dedup|mix|pipeline|inspect`: the data pipeline from the command line.

    llmlab data clean    --data crawl/ --out runs/clean [--languages en] [--executor local --workers 2]
    llmlab data dedup    --data runs/clean --out runs/dedup --threshold 0.8
    llmlab data mix      --data web=runs/dedup code=src/ --out runs/mix --weights web=1 code=3
    llmlab data pipeline --pipeline clean.toml --data crawl/ --out runs/clean --executor dask --workers 2
    llmlab data inspect  --data tasks --tokenizer runs/data/tokenizer.llmlab.json

Each of the first four builds a pipeline (`clean`, `dedup` and `mix` are fixed ones; `pipeline` reads a
TOML/JSON file) and runs it with `llmlab.data.pipeline.run_pipeline`; every run writes its output shards,
`report.json` and `report.md` into `--out`. `inspect` shows the first training rows the way the model
will see them: tokens, with the ones that carry loss coloured.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

from llmlab.common import log
from llmlab.common.config import arg
from llmlab.common.errors import UserError
from llmlab.data.pipeline import (
    C4,
    PII,
    ExactDedup,
    GopherQuality,
    GopherRepetition,
    Language,
    MinHashDedup,
    Mix,
    Normalize,
    Pipeline,
    load_pipeline,
    make_executor,
    run_pipeline,
)
from llmlab.data.pipeline.executors import EXECUTORS
from llmlab.recipes.shared import eval_task_texts


@dataclass
class RunArgs:
    """Where the documents come from, where they go, and what runs them."""

    data: list[str] = arg([], "files, folders, NAME=PATH (names the source), or hf:org/name[#config][@split]")
    out: str = arg("runs/clean", "folder for output shards, report.json and report.md")
    executor: str = arg("inprocess", "where shards run", choices=list(EXECUTORS))
    workers: int = arg(2, "worker processes for local and dask")
    scheduler: str | None = arg(None, "a Dask scheduler's address (tcp://host:8786) instead of a local cluster")
    task_timeout: float = arg(3600.0, "seconds one shard may take before the run stops")
    keep_work: bool = arg(False, "keep intermediate shards and summaries in OUT/_work")


@dataclass
class ShardArgs:
    """Settings a pipeline file holds itself; the fixed pipelines take them as flags."""

    shard_mb: float = arg(64.0, "megabytes of input per shard: the unit of work, retrying and resuming")
    output_format: str = arg("jsonl", "format of the output shards", choices=["jsonl", "parquet"])


def _run(pipeline: Pipeline, args: RunArgs, title: str) -> dict:
    if not args.data:
        raise UserError("--data: give at least one file, folder or hf:dataset")
    if isinstance(args, ShardArgs):
        pipeline.shard_mb, pipeline.output_format = args.shard_mb, args.output_format
    executor = make_executor(args.executor, args.workers, args.scheduler)
    try:
        return run_pipeline(pipeline, args.data, args.out, executor, keep_work=args.keep_work,
                            task_timeout=args.task_timeout, title=title)
    finally:
        executor.close()


@dataclass
class CleanArgs(ShardArgs, RunArgs):
    unicode: str = arg("NFC", "Unicode normalisation form", choices=["NFC", "NFKC", "none"])
    whitespace: str = arg("lines", "lines: strip line ends and blank runs; collapse: also inside lines",
                          choices=["lines", "collapse", "none"])
    languages: list[str] = arg([], "keep only these languages (py3langid codes, e.g. en de); default: no filter")
    language_threshold: float = arg(0.65, "minimum language score to keep a document")
    gopher: bool = arg(True, "Gopher quality and repetition rules")
    c4: bool = arg(True, "C4 rules (line filters, lorem ipsum, curly braces, bad words)")
    pii: bool = arg(True, "redact e-mails, IP addresses and phone numbers")


def clean(args: CleanArgs) -> dict:
    stages = [Normalize(unicode=args.unicode, whitespace=args.whitespace)]
    if args.languages:
        stages.append(Language(languages=args.languages, threshold=args.language_threshold))
    if args.gopher:
        stages += [GopherQuality(), GopherRepetition()]
    if args.c4:
        stages.append(C4())
    if args.pii:
        stages.append(PII())
    return _run(Pipeline(stages), args, "clean")


@dataclass
class DedupArgs(ShardArgs, RunArgs):
    out: str = arg("runs/dedup", "folder for the surviving documents (JSONL: id, text, source) and report.json")
    threshold: float = arg(0.8, "Jaccard similarity above which documents are near-duplicates")
    exact: bool = arg(True, "drop exact copies (by content hash) before MinHash")
    num_perm: int = arg(128, "MinHash permutations")
    ngram: int = arg(5, "shingle size in words (or characters with --unit char)")
    unit: str = arg("word", "shingle unit", choices=["word", "char"])


def dedup(args: DedupArgs) -> dict:
    stages = [ExactDedup()] if args.exact else []
    stages.append(MinHashDedup(threshold=args.threshold, num_perm=args.num_perm, ngram=args.ngram, unit=args.unit))
    return _run(Pipeline(stages), args, "dedup")


@dataclass
class MixArgs(ShardArgs, RunArgs):
    out: str = arg("runs/mix", "folder for the mixed documents and report.json (tokens per source)")
    weights: list[str] = arg([], "epochs per source as NAME=W (code=3 repeats code three times, web=0.5 keeps half)")
    temperature: float | None = arg(None, "instead of weights: sample sources in proportion to tokens^(1/T)")
    total_tokens: int | None = arg(None, "with --temperature: tokens in the output (default: as many as the input)")
    tokenizer: str = arg("bytes", "count tokens with this tokenizer file, or 'bytes'")
    seed: int = arg(0, "seed of the per-document sampling coins")


def mix(args: MixArgs) -> dict:
    weights = {}
    for item in args.weights:
        name, _, value = item.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            raise UserError(f"--weights {item}: write NAME=NUMBER, e.g. code=3") from None
    stage = Mix(weights=weights, temperature=args.temperature, total_tokens=args.total_tokens,
                tokenizer=args.tokenizer, seed=args.seed)
    return _run(Pipeline([stage]), args, "mix")


@dataclass
class PipelineArgs(RunArgs):
    pipeline: str | None = arg(None, "the pipeline file (TOML or JSON: [[stages]] tables) or a preset: code, web")


def pipeline(args: PipelineArgs) -> dict:
    if not args.pipeline:
        raise UserError("--pipeline: give a pipeline file (TOML or JSON)")
    p = load_pipeline(args.pipeline, resolve_task=eval_task_texts)
    return _run(p, args, f"pipeline {Path(args.pipeline).name}")


@dataclass
class InspectArgs:
    data: str = arg("tasks", "SFT rows: 'tasks', a .jsonl of messages, an HF dataset; or a prepared shards folder")
    tokenizer: str | None = arg(None, "tokenizer file (default: the shards folder's, or the model's)")
    model: str | None = arg(None, "take the tokenizer and chat template from this model (anything llmlab.load opens)")
    rows: int = arg(3, "how many rows to show")
    max_tokens: int = arg(256, "tokens shown per row")
    color: str = arg("auto", "colour the tokens", choices=["auto", "always", "never"])
    html: str | None = arg(None, "also write the rows as an HTML page here")


ANSI_TRAINED, ANSI_MASKED, ANSI_RESET = "\033[30;42m", "\033[2m", "\033[0m"


def _token_text(tokenizer, i: int) -> str:
    return tokenizer.decode_bytes([i]).decode("utf-8", errors="replace")


def _rows(args: InspectArgs, tokenizer) -> list[tuple[list[int], list[bool]]]:
    """(token ids, trained?) per row: SFT rows have a loss mask; pretraining windows train every token."""
    from llmlab.data.loader import read_manifest
    from llmlab.data.sft import IGNORE_INDEX, load_conversations, tokenize_messages

    folder = Path(args.data)
    if (folder / "manifest.json").is_file():
        import numpy as np

        manifest = read_manifest(folder)
        first = manifest["train"]["files"][0]["file"]
        flat = np.fromfile(folder / first, dtype=manifest["dtype"])
        return [(flat[i * args.max_tokens:(i + 1) * args.max_tokens].tolist(), [True] * args.max_tokens)
                for i in range(args.rows)]
    conversations, _, _ = load_conversations(args.data, val_fraction=0.0, n_train=args.rows, n_heldout=1)
    rows = []
    for messages in conversations[:args.rows]:
        ids, labels = tokenize_messages(tokenizer, messages)
        rows.append((ids, [label != IGNORE_INDEX for label in labels]))
    return rows


def inspect(args: InspectArgs) -> list[dict]:
    from llmlab.tokenizer import Tokenizer

    shards_tokenizer = Path(args.data) / "tokenizer.llmlab.json"
    if args.tokenizer:
        tokenizer = Tokenizer.load(args.tokenizer)
    elif args.model:
        from llmlab.loading import load

        tokenizer = load(args.model).tokenizer
    elif shards_tokenizer.is_file():
        tokenizer = Tokenizer.load(shards_tokenizer)
    else:
        raise UserError("--tokenizer or --model: say whose tokens to show (or point --data at a prepared folder)")
    colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    shown, html_rows = [], []
    for n, (ids, trained) in enumerate(_rows(args, tokenizer)):
        ids, trained = ids[:args.max_tokens], trained[:args.max_tokens]
        pieces = [_token_text(tokenizer, i) for i in ids]
        if colour:
            body = "".join((ANSI_TRAINED if t else ANSI_MASKED) + p + ANSI_RESET
                           for p, t in zip(pieces, trained, strict=True))
        else:  # without colour, trained tokens are bracketed
            body = "".join(f"[{p}]" if t else p for p, t in zip(pieces, trained, strict=True))
        print(f"--- row {n}: {len(ids)} tokens, {sum(trained)} with loss ---\n{body}\n")
        shown.append({"ids": ids, "trained": trained, "pieces": pieces})
        html_rows.append(_html_row(n, pieces, trained))
    if args.html:
        from llmlab.common.io import write_text_atomic

        style = ("<style>body{font-family:monospace;white-space:pre-wrap}.t{background:#9e9}.m{color:#999}"
                 "span{border-right:1px solid #ccc}</style>")
        write_text_atomic(args.html, "<!doctype html><meta charset=utf-8>" + style + "".join(html_rows))
        log.info(f"wrote {args.html}")
    return shown


def _html_row(n: int, pieces: list[str], trained: list[bool]) -> str:
    import html

    spans = "".join(f'<span class="{"t" if t else "m"}">{html.escape(p)}</span>'
                    for p, t in zip(pieces, trained, strict=True))
    return f"<h3>row {n}: {sum(trained)} of {len(pieces)} tokens with loss (green)</h3><div>{spans}</div>"
