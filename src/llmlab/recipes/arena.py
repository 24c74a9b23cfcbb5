"""`llmlab eval arena`: people vote between two anonymised answers in the browser; a leaderboard ranks the models.

Answers come from results files (`--results`, JSONL of prompt/answer/model; see `llmlab.eval.arena.pool`), or
are generated here, greedily, by each of `--models` for each prompt (then saved to answers.jsonl beside the
database, which `--results` can reuse next time), or both. All answers are ready before the page is served.
Votes go to an SQLite file (`--db`) and survive restarts; run again on the same file to keep voting.
When the server stops (Ctrl-C), and with `--leaderboard-only` without serving, the leaderboard is printed and
written as leaderboard.md, leaderboard.json and leaderboard.png.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from llmlab.common import log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device, resolve_dtype
from llmlab.common.errors import UserError
from llmlab.common.io import write_text_atomic
from llmlab.eval.arena.app import create_app
from llmlab.eval.arena.board import markdown, write_leaderboard
from llmlab.eval.arena.pool import AnswerPool, read_prompts, read_results
from llmlab.eval.arena.server import serve
from llmlab.eval.arena.store import VoteStore, matches
from llmlab.eval.ratings import leaderboard
from llmlab.infer.api import end_of_turn_ids
from llmlab.recipes.shared import RuntimeArgs


@dataclass
class ArenaArgs(RuntimeArgs):
    models: list[str] = arg([], "models that answer the prompts here: checkpoint or run folder, Hugging Face folder "
                                "or hub id, .gguf or alias; NAME=SOURCE names one")
    results: list[str] = arg([], "results files, JSONL with prompt, answer and (optionally) model per line; "
                                 "NAME=FILE names the model, else each line's model field, else the file's stem")
    prompts: str | None = arg(None, "prompts for --models: .txt (one per line), .jsonl (a prompt field per line) or "
                                    ".json (a list) (default: 12 built-in prompts)")
    max_new_tokens: int = arg(128, "most tokens per generated answer (greedy decoding)")
    chat: bool = arg(True, "wrap each prompt in the model's chat template when it has one")
    db: str = arg("runs/arena/votes.sqlite3", "SQLite file of comparisons and votes (created when missing)")
    out: str | None = arg(None, "folder for leaderboard.md/.json/.png and generated answers.jsonl "
                                "(default: the database's folder)")
    host: str = arg("127.0.0.1", "address to listen on; anything but 127.0.0.1 lets other machines vote (no login)")
    port: int = arg(8000, "port to listen on; 0 picks a free one (the URL is printed)")
    reveal: bool = arg(False, "after each vote, show which two models answered (can bias later votes)")
    leaderboard_only: bool = arg(False, "print and write the leaderboard from --db without serving")
    both_bad: str = arg("tie", "how a 'both bad' vote counts in the ratings", choices=["tie", "exclude"])
    k_factor: float = arg(32.0, "Elo K factor: the most points one vote moves")
    prior: float = arg(1.0, "Bradley-Terry: tied virtual games per pair of models, so an unbeaten model still "
                            "gets a finite rating (must be above 0)")
    bootstrap: int = arg(200, "bootstrap rounds for the ratings' confidence intervals")
    seed: int = arg(0, "seed for drawing pairs and sides, and for the bootstrap")
    progress: bool = arg(True, "show a progress bar while generating answers")


def split_name(source: str) -> tuple[str, str]:
    """`NAME=SOURCE` -> (NAME, SOURCE); a plain source is named by its folder or file name."""
    if "=" in source and not Path(source).exists():
        name, source = source.split("=", 1)
        return name, source
    path = Path(source.rstrip("/"))
    if path.name == "checkpoint":  # a run folder's checkpoint: the run is the better name
        path = path.parent
    return path.stem if path.suffix == ".gguf" else path.name, source


def generate_answers(args: ArenaArgs, prompts: list[str]) -> list[dict]:
    """Each model's greedy answer to each prompt: [{"model", "prompt", "answer"}], one model in memory at a time."""
    import torch

    import llmlab

    if args.threads:
        torch.set_num_threads(args.threads)
    rows, names = [], set()
    for entry in args.models:
        name, source = split_name(entry)
        if name in names:
            raise UserError(f"--models: two models are both called {name!r}; name them as NAME=SOURCE")
        names.add(name)
        loaded = llmlab.load(source, device=resolve_device(args.device), dtype=resolve_dtype(args.dtype))
        tok = loaded.tokenizer
        if tok is None:
            raise UserError(f"{source}: has no tokenizer, so it cannot answer text prompts")
        stops = end_of_turn_ids(tok)
        for prompt in tqdm(prompts, desc=name, disable=not args.progress):
            use_chat = args.chat and getattr(tok, "chat_template", None)
            ids = loaded.chat_ids([{"role": "user", "content": prompt}]) if use_chat else loaded.encode(prompt)
            answer = loaded.generate(ids, args.max_new_tokens, temperature=0.0, stop_ids=stops, text=True,
                                     truncate=True)
            rows.append({"model": name, "prompt": prompt, "answer": answer.strip()})
        del loaded
    return rows


def build_pool(args: ArenaArgs, out: Path) -> AnswerPool:
    if len(args.models) + len(args.results) < 1:
        raise UserError("give two or more --models to generate answers, or --results files of saved answers")
    pool = read_results(args.results)
    if args.models:
        generated = generate_answers(args, read_prompts(args.prompts))
        write_text_atomic(out / "answers.jsonl", "".join(json.dumps(r) + "\n" for r in generated))
        log.info(f"arena: {len(generated)} answers saved to {out / 'answers.jsonl'} (reuse with --results)")
        for r in generated:
            pool.add(r["model"], r["prompt"], r["answer"])
    return pool


def run(args: ArenaArgs) -> list[dict]:
    """Serve the arena until Ctrl-C (or, with leaderboard_only, do not), then write and return the leaderboard."""
    if args.prior <= 0:
        raise UserError(f"--prior must be above 0, got {args.prior}")
    if args.leaderboard_only and not Path(args.db).is_file():
        raise UserError(f"{args.db}: no such vote database; point --db at the arena's votes.sqlite3")
    store = VoteStore(args.db)
    out = Path(args.out) if args.out else Path(args.db).parent
    if not args.leaderboard_only:
        pool = build_pool(args, out)
        app = create_app(pool, store, reveal=args.reveal, seed=args.seed, k=args.k_factor, prior=args.prior,
                         rounds=args.bootstrap, both_bad=args.both_bad)
        log.info(f"arena: {len(pool.models)} models ({', '.join(pool.models)}), {len(pool.prompts)} prompts, "
                 f"{store.count()} votes so far in {args.db}")
        try:
            serve(app, args.host, args.port)
        except OSError as e:
            raise UserError(f"--host/--port: {e}") from None
    votes = store.votes()
    counted = matches(votes, args.both_bad)
    rows = leaderboard(counted, args.k_factor, args.prior, args.bootstrap, args.seed)
    meta = {"db": str(args.db), "votes": len(votes), "counted": len(counted), "both_bad": args.both_bad,
            "k_factor": args.k_factor, "prior": args.prior, "bootstrap": args.bootstrap, "seed": args.seed}
    paths = write_leaderboard(rows, out, meta)
    log.info(markdown(rows) if rows else f"arena: no votes yet in {args.db}")
    log.info(f"arena: wrote {', '.join(str(p) for p in paths)}")
    return rows
