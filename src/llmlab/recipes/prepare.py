"""`llmlab data prepare`: text in, a tokenizer and binary shards out."""

from dataclasses import dataclass

from llmlab.common import log
from llmlab.common.config import arg
from llmlab.common.errors import UserError
from llmlab.data.shards import prepare
from llmlab.data.sources import default_corpus, leading_text, read_documents, split_documents


@dataclass
class PrepareArgs:
    data: list[str] = arg([],
                          "text files, folders, .jsonl (field 'text') or .parquet; default: Python's own standard "
                          "library")
    out: str = arg("runs/data", "folder for shards, manifest.json and the tokenizer")
    tokenizer: str | None = arg(None,
                                "use this tokenizer (llmlab file, tokenizer.json, GGUF...) instead of training one")
    vocab_size: int = arg(4096, "vocabulary size of the tokenizer to train")
    tokenizer_mb: float = arg(4.0, "train the tokenizer on at most this many MB of text")
    val_fraction: float = arg(0.05, "share of documents held out for validation")
    pipeline: str | None = arg(None, "clean the training documents with this pipeline file (TOML/JSON) or "
                                     "preset (code, web) before tokenising; the held-out split stays raw, so runs "
                                     "compare on the same text")


def run(args: PrepareArgs) -> dict:
    from llmlab.tokenizer import Tokenizer

    if not 0 < args.val_fraction < 1:
        raise UserError(f"--val-fraction {args.val_fraction}: must be between 0 and 1")
    docs = read_documents(args.data) if args.data else default_corpus()
    train_docs, val_docs = split_documents(docs, args.val_fraction)
    if args.pipeline:
        from pathlib import Path

        from llmlab.data.pipeline import load_pipeline, process_documents
        from llmlab.recipes.shared import eval_task_texts

        pipe = load_pipeline(args.pipeline, resolve_task=eval_task_texts)
        train_docs, _ = process_documents(train_docs, pipe, Path(args.out) / "pipeline")
    if args.tokenizer:
        tokenizer = Tokenizer.load(args.tokenizer)
    else:
        sample = leading_text(train_docs, int(args.tokenizer_mb * 1e6))
        log.info(f"training a {args.vocab_size}-token BPE tokenizer on {len(sample) / 1e6:.1f}M characters")
        tokenizer = Tokenizer.train(sample, args.vocab_size, progress=True)
    manifest = prepare(train_docs, val_docs, tokenizer, args.out)
    log.info(f"wrote {args.out}: {manifest['train']['tokens']:,} train and {manifest['val']['tokens']:,} "
             f"validation tokens")
    return manifest
