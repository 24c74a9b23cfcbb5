"""The arena's web app: a voting page, a leaderboard page, and the JSON API behind them (FastAPI).

    GET  /                 the voting page: a prompt, answers A and B, four buttons
    GET  /leaderboard      the leaderboard page
    POST /api/next         {"session": id or null} -> a new comparison: {session, comparison_id, prompt, a, b}
    POST /api/vote         {comparison_id, session, verdict} -> {votes} (and {models} when reveal is on)
    GET  /api/leaderboard  {votes, counted, both_bad, rows}: see `llmlab.eval.ratings.leaderboard`

Every comparison is recorded before it is shown and a vote must name one issued to the same session, so
votes cannot be invented or repeated (`store.VoteError` -> 404, 403, 409; a malformed request -> 422). The
sides are drawn at random per comparison and the page shows no model names, so position and reputation
cannot sway a vote; with `reveal`, the vote's answer names the two models, after the vote is stored.
Everything is served from this package: no CDN, no build step, works offline. The pages put answers on
screen as text (`textContent`), never as HTML.

Not here: producing the answers (`pool.py` reads them, a recipe generates them), running the server
(`server.py`).
"""

import random
import secrets
import threading
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from llmlab.eval.arena.pool import AnswerPool
from llmlab.eval.arena.store import VoteError, VoteStore, matches
from llmlab.eval.ratings import leaderboard

STATIC = Path(__file__).with_name("static")
SESSION = r"^[A-Za-z0-9_-]{8,64}$"


class NextRequest(BaseModel):
    session: str | None = Field(None, pattern=SESSION)


class VoteRequest(BaseModel):
    comparison_id: str = Field(max_length=64)
    session: str = Field(pattern=SESSION)
    verdict: Literal["a", "b", "tie", "both_bad"]


def create_app(pool: AnswerPool, store: VoteStore, reveal: bool = False, seed: int | None = None, k: float = 32.0,
               prior: float = 1.0, rounds: int = 200, both_bad: str = "tie") -> FastAPI:
    """The app over a pool of answers and a vote store; `seed` fixes the draws, the rest go to the leaderboard."""
    pool.check()
    matches([], both_bad)  # refuse a bad both_bad now, not on the first leaderboard request
    if prior <= 0:
        raise ValueError(f"prior must be above 0 (a live leaderboard meets unbeaten models), got {prior}")
    rng, draw_lock = random.Random(seed), threading.Lock()  # handlers run on a thread pool
    cache: dict[int, dict] = {}  # the leaderboard, by vote count: refitting takes a moment
    app = FastAPI(title="llmlab arena", docs_url=None, redoc_url=None)  # the docs pages load scripts from a CDN
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/leaderboard", include_in_schema=False)
    def leaderboard_page() -> FileResponse:
        return FileResponse(STATIC / "leaderboard.html")

    @app.post("/api/next")
    def next_comparison(request: NextRequest) -> dict:
        session = request.session or secrets.token_urlsafe(12)
        voted = store.voted(session)  # prefer what this voter has not judged yet
        with draw_lock:
            pid, model_a, model_b = pool.draw(rng, voted)
        comparison_id = store.issue(session, pid, model_a, model_b)
        return {"session": session, "comparison_id": comparison_id, "prompt": pool.prompts[pid],
                "a": pool.answers[model_a][pid], "b": pool.answers[model_b][pid]}

    @app.post("/api/vote")
    def vote(request: VoteRequest) -> dict:
        try:
            settled = store.vote(request.comparison_id, request.session, request.verdict)
        except VoteError as e:
            raise HTTPException(e.status, str(e)) from None
        out: dict = {"votes": store.count()}
        if reveal:
            out["models"] = {"a": settled["model_a"], "b": settled["model_b"]}
        return out

    @app.get("/api/leaderboard")
    def board() -> dict:
        votes = store.votes()
        result = cache.get(len(votes))
        if result is None:
            counted = matches(votes, both_bad)
            result = {"votes": len(votes), "counted": len(counted), "both_bad": both_bad,
                      "rows": leaderboard(counted, k, prior, rounds, seed or 0)}
            cache.clear()
            cache[len(votes)] = result
        return result

    return app
