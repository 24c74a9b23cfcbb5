"""`llmlab tokenizer train|encode|decode|analyze|convert`: thin wiring around `llmlab.tokenizer`.

Each command is a dataclass of arguments plus a function taking it; the same
function is the Python API (`train(TrainArgs(input=["corpus.txt"], vocab_size=4096))`).
"""

import json
import sys
from dataclasses import MISSING, dataclass
from pathlib import Path

from llmlab.common import log
from llmlab.common.config import arg
from llmlab.common.constants import TOKENIZER_FILE
from llmlab.common.errors import UserError
from llmlab.common.io import write_text_atomic
from llmlab.tokenizer import Tokenizer
from llmlab.tokenizer.patterns import PATTERNS


@dataclass
class TrainArgs:
    input: list[str] = arg(MISSING, "text files or folders to train on", short="-i")
    vocab_size: int = arg(MISSING, "vocabulary size, special tokens included")
    output: str = arg(TOKENIZER_FILE, "where to write the tokenizer", short="-o")
    pattern: str = arg("gpt4", f"split pattern: {', '.join(PATTERNS)} or a regex")
    special_tokens: list[str] = arg(["<|endoftext|>"], "special tokens, given the last ids")
    trainer: str = arg("fast", "BPE trainer", choices=["fast", "reference"])
    hf_dir: str = arg("", "also write a Hugging Face tokenizer.json to this folder")
    progress: bool = arg(True, "show progress bars")


def train(args: TrainArgs) -> Tokenizer:
    tok = Tokenizer.train(args.input, args.vocab_size, pattern=args.pattern, special_tokens=args.special_tokens,
                          progress=args.progress and sys.stderr.isatty(), trainer=args.trainer)
    tok.save(args.output)
    if args.hf_dir:
        tok.save_hf(args.hf_dir)
    log.info(f"wrote {args.output}: {tok.vocab_size} tokens ({len(tok.merges)} merges, "
             f"{len(tok.special_tokens)} special)")
    return tok


@dataclass
class EncodeArgs:
    tokenizer: str = arg(MISSING, "tokenizer file or folder (llmlab, tokenizer.json, GGUF, ...)", short="-t")
    text: str = arg("", "text to encode")
    input: str = arg("", "or a UTF-8 file to encode", short="-i")
    allowed_special: list[str] = arg([], "special tokens to match in the text ('all' for every one)")
    output: str = arg("", "write ids as JSON here instead of printing", short="-o")


def _read_text(text: str, path: str) -> str:
    if path:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"{path}: no such file; pass an existing UTF-8 text file")
        try:
            return p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not UTF-8 text ({e.reason}); convert it to UTF-8") from None
    if not text:
        raise UserError("nothing to encode: give --text or --input")
    return text


def encode(args: EncodeArgs) -> list[int]:
    tok = Tokenizer.load(args.tokenizer)
    allowed = "all" if args.allowed_special == ["all"] else set(args.allowed_special) or "none"
    ids = tok.encode(_read_text(args.text, args.input), allowed_special=allowed)
    if args.output:
        write_text_atomic(args.output, json.dumps(ids) + "\n")
        log.info(f"wrote {len(ids)} ids to {args.output}")
    else:
        print(json.dumps(ids))
    return ids


@dataclass
class DecodeArgs:
    tokenizer: str = arg(MISSING, "tokenizer file or folder", short="-t")
    ids: list[int] = arg([], "token ids")
    input: str = arg("", "or a JSON file holding a list of ids", short="-i")


def decode(args: DecodeArgs) -> str:
    tok = Tokenizer.load(args.tokenizer)
    ids = args.ids
    if args.input:
        try:
            ids = json.loads(Path(args.input).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"{args.input}: cannot read a JSON list of ids ({e})") from None
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise UserError(f"{args.input}: expected a JSON list of integer ids")
    text = tok.decode(ids)
    print(text)
    return text


@dataclass
class AnalyzeArgs:
    tokenizer: list[str] = arg(MISSING, "tokenizers to compare (repeat the flag)", short="-t")
    text: list[str] = arg([], "text files to measure (default: the built-in multilingual samples)")
    sample: str = arg("", "line to show split by each tokenizer (default: one per text)")
    plot: str = arg("", "save a bar chart (PNG/SVG/PDF) here")


def analyze(args: AnalyzeArgs) -> list:
    from llmlab.tokenizer import analysis

    toks = {name: Tokenizer.load(name) for name in args.tokenizer}
    if args.text:
        texts = {Path(p).stem: _read_text("", p) for p in args.text}
    else:
        texts = analysis.sample_texts()
    rows = analysis.compare(toks, texts)
    print(analysis.format_table(rows))
    lines = [args.sample] if args.sample else [t.strip().splitlines()[0] for t in texts.values() if t.strip()]
    for line in lines:
        print(analysis.format_splits(toks, line))
    if args.plot:
        analysis.plot(rows, args.plot)
        log.info(f"wrote {args.plot}")
    return rows


@dataclass
class ConvertArgs:
    input: str = arg(MISSING, "tokenizer to read (llmlab, tokenizer.json, GGUF, vocab+merges, tiktoken)", short="-i")
    output: str = arg(MISSING, "file (llmlab format) or folder (hf format) to write", short="-o")
    format: str = arg("llmlab", "output format", choices=["llmlab", "hf"])


def convert(args: ConvertArgs) -> Tokenizer:
    tok = Tokenizer.load(args.input)
    if args.format == "hf":
        tok.save_hf(args.output)
    else:
        tok.save(args.output)
    log.info(f"wrote {args.output} ({args.format}, {tok.vocab_size} tokens)")
    return tok
