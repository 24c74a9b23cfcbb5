"""The arena: results files, the SQLite store under concurrent and killed writers, the HTTP API, the recipe,
and a real browser clicking through votes (Debian's Chromium driven by Playwright)."""

import json
import queue
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from llmlab.common.errors import UserError
from llmlab.eval.arena.app import create_app
from llmlab.eval.arena.pool import AnswerPool, prompt_id, read_prompts, read_results
from llmlab.eval.arena.server import BackgroundServer
from llmlab.eval.arena.store import VoteError, VoteStore, matches

PROMPTS = [f"question {i}?" for i in range(6)]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WRITER = """
import sys
from llmlab.eval.arena.store import VoteStore
store, name, n = VoteStore(sys.argv[1]), sys.argv[2], int(sys.argv[3])
i = 0
while i != n:  # n < 0: until killed
    cid = store.issue("session-" + name, "p%d" % i, "x", "y")
    store.vote(cid, "session-" + name, ("a", "b", "tie", "both_bad")[i % 4])
    print(i, flush=True)
    i += 1
"""


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def results(tmp_path) -> list[str]:
    """Two results files, good.jsonl and bad.jsonl, answering the same six prompts."""
    return [write_jsonl(tmp_path / f"{m}.jsonl", [{"prompt": p, "answer": f"{m} answer {i}", "task": "t"}
                                                 for i, p in enumerate(PROMPTS)]) for m in ("good", "bad")]


def test_results_files_name_their_models(tmp_path, results):
    pool = read_results(results)
    assert pool.models == ["bad", "good"] and len(pool.prompts) == 6  # named by file stem, prompts shared
    assert pool.answers["good"][prompt_id("question 2?")] == "good answer 2"
    assert len(pool.matchups()) == 6
    both = write_jsonl(tmp_path / "both.jsonl", [{"prompt": "q", "answer": "1", "model": "m1"},
                                                 {"prompt": "q", "answer": "2", "model": "m2"},
                                                 {"prompt": "q", "answer": "again", "model": "m2"}])
    pool = read_results([both, f"renamed={results[0]}"])
    assert pool.models == ["m1", "m2", "renamed"]
    assert pool.answers["m2"][prompt_id("q")] == "2"  # a second answer to the same prompt is ignored
    assert [m[1:] for m in pool.matchups()] == [("m1", "m2")]  # renamed shares no prompt with them
    assert prompt_id("hello") == "2cf24dba5fb0"


def test_bad_results_and_prompts_files_are_user_errors(tmp_path, results):
    bad = tmp_path / "bad.txt.jsonl"
    bad.write_text('{"prompt": "q", "answer": "a"}\nnot json\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.txt.jsonl:2: not JSON"):
        read_results([str(bad)])
    bad.write_text('{"prompt": "q"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r":1: needs a text 'answer' field"):
        read_results([str(bad)])
    with pytest.raises(UserError, match="no such file"):
        read_results([str(tmp_path / "missing.jsonl")])
    with pytest.raises(UserError, match="two or more models, got 1"):
        read_results(results[:1]).check()
    other = write_jsonl(tmp_path / "other.jsonl", [{"prompt": "something else", "answer": "x"}])
    with pytest.raises(UserError, match="no prompt was answered by two models"):
        read_results([results[0], other]).check()

    assert len(read_prompts()) == 12  # the built-in prompts
    (tmp_path / "p.txt").write_text("one\n\n two \n", encoding="utf-8")
    assert read_prompts(tmp_path / "p.txt") == ["one", "two"]
    (tmp_path / "p.json").write_text('["x", "y"]', encoding="utf-8")
    assert read_prompts(tmp_path / "p.json") == ["x", "y"]
    assert read_prompts(write_jsonl(tmp_path / "p.jsonl", [{"prompt": "z"}])) == ["z"]
    (tmp_path / "p.json").write_text('{"x": 1}', encoding="utf-8")
    with pytest.raises(UserError, match="a JSON list of prompt texts"):
        read_prompts(tmp_path / "p.json")
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(UserError, match="holds no prompts"):
        read_prompts(tmp_path / "empty.txt")


def test_draw_shuffles_sides_and_prefers_what_the_voter_has_not_judged():
    pool = AnswerPool()
    for model in ("x", "y", "z"):
        for p in ("p", "q"):
            pool.add(model, p, f"{model}-{p}")
    rng = random.Random(0)
    draws = [pool.draw(rng) for _ in range(200)]
    assert {(a, b) for _, a, b in draws} == {("x", "y"), ("y", "x"), ("x", "z"), ("z", "x"), ("y", "z"), ("z", "y")}
    left = sum(a == "x" for _, a, b in draws if "x" in (a, b)) / sum("x" in (a, b) for _, a, b in draws)
    assert 0.35 < left < 0.65  # a model is on the left about half the time
    everything = set(pool.matchups())
    last = next(iter(everything))
    for _ in range(20):
        pid, a, b = pool.draw(rng, everything - {last})
        assert (pid, *sorted((a, b))) == last
    assert pool.draw(rng, everything)[0] in pool.prompts  # all judged: any matchup again


def test_store_refuses_forged_foreign_and_repeated_votes(tmp_path):
    store = VoteStore(tmp_path / "sub" / "votes.sqlite3")  # the folder is created
    first = store.issue("session-1", "p1", "x", "y")
    second = store.issue("session-1", "p2", "y", "x")
    assert store.vote(second, "session-1", "a") == {"comparison_id": second, "prompt_id": "p2", "model_a": "y",
                                                    "model_b": "x", "verdict": "a"}
    for cid, session, verdict, status in [("forged", "session-1", "a", 404), (first, "session-2", "a", 403),
                                          (second, "session-1", "b", 409), (first, "session-1", "best", 422)]:
        with pytest.raises(VoteError) as e:
            store.vote(cid, session, verdict)
        assert e.value.status == status
    store.vote(first, "session-1", "both_bad")
    votes = store.votes()
    assert [(v["comparison_id"], v["verdict"], v["model_a"]) for v in votes] == [(second, "a", "y"),
                                                                                (first, "both_bad", "x")]
    assert votes[0]["session"] == "session-1" and votes[0]["voted_at"] >= votes[0]["issued_at"]
    assert store.voted("session-1") == {("p1", "x", "y"), ("p2", "x", "y")} and store.voted("session-2") == set()
    assert matches(votes) == [("y", "x", 1.0), ("x", "y", 0.5)]
    assert matches(votes, both_bad="exclude") == [("y", "x", 1.0)]
    with pytest.raises(ValueError, match="both_bad"):
        matches(votes, both_bad="loss")
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert VoteStore(store.path).count() == 2  # reopening keeps everything


def test_store_opens_only_arena_databases(tmp_path):
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(UserError, match="junk.sqlite3: cannot open as SQLite"):
        VoteStore(junk)
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(UserError, match="other.sqlite3: not an arena vote database"):
        VoteStore(other)


def test_concurrent_writer_processes_lose_no_vote(tmp_path):
    db = tmp_path / "votes.sqlite3"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(w), "50"], stdout=subprocess.DEVNULL)
             for w in range(4)]  # the four open the new file at the same time too
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    store = VoteStore(db)
    votes = store.votes()
    assert len(votes) == 200 and store.integrity() == "ok"
    for w in range(4):
        mine = [v for v in votes if v["session"] == f"session-{w}"]
        assert [v["prompt_id"] for v in mine] == [f"p{i}" for i in range(50)]  # each writer's order kept


def test_killed_writer_keeps_every_committed_vote(tmp_path):
    db = tmp_path / "votes.sqlite3"
    VoteStore(db)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db), "w", "-1"], stdout=subprocess.PIPE, text=True)
    try:
        acknowledged = -1
        while acknowledged < 30:
            acknowledged = int(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGKILL)  # no cleanup, mid-transaction or not
        proc.wait(timeout=10)
    store = VoteStore(db)
    assert store.integrity() == "ok"
    votes = store.votes()
    assert acknowledged + 1 <= len(votes) <= acknowledged + 2  # every printed vote, perhaps one more
    assert [v["prompt_id"] for v in votes] == [f"p{i}" for i in range(len(votes))]
    store.vote(store.issue("s-after", "p", "x", "y"), "s-after", "tie")  # and it takes new votes
    assert store.count() == len(votes) + 1


def test_http_api(tmp_path, results):
    store = VoteStore(tmp_path / "votes.sqlite3")
    with BackgroundServer(create_app(read_results(results), store, reveal=True, seed=0, rounds=20)) as url, \
            httpx.Client(base_url=url, timeout=10) as client:
        assert url.startswith("http://127.0.0.1:")
        page = client.get("/")
        assert page.status_code == 200 and '<script src="/static/arena.js">' in page.text
        for path in ("/", "/leaderboard", "/static/arena.js", "/static/arena.css"):
            assert "://" not in client.get(path).text  # nothing fetched from elsewhere: works offline
        assert client.get("/api/leaderboard").json() == {"votes": 0, "counted": 0, "both_bad": "tie", "rows": []}

        shown = client.post("/api/next", json={}).json()
        session = shown["session"]
        assert shown["prompt"] in PROMPTS and {shown["a"].split()[0], shown["b"].split()[0]} == {"good", "bad"}
        good_side = "a" if shown["a"].startswith("good") else "b"
        vote = {"comparison_id": shown["comparison_id"], "session": session, "verdict": good_side}
        answer = client.post("/api/vote", json=vote).json()
        assert answer == {"votes": 1, "models": {"a": shown["a"].split()[0], "b": shown["b"].split()[0]}}
        assert client.post("/api/vote", json=vote).status_code == 409
        assert client.post("/api/vote", json={**vote, "comparison_id": "made-up"}).status_code == 404
        assert client.post("/api/vote", json={**vote, "verdict": "great"}).status_code == 422
        assert client.post("/api/next", json={"session": "no spaces allowed"}).status_code == 422
        other = client.post("/api/next", json={}).json()
        assert other["session"] != session
        assert client.post("/api/vote", json={**vote, "comparison_id": other["comparison_id"]}).status_code == 403

        def voter(n: int) -> None:  # four voters at once, through the server's thread pool
            with httpx.Client(base_url=url, timeout=10) as c:
                s = None
                for _ in range(n):
                    shown = c.post("/api/next", json={"session": s}).json()
                    s = shown["session"]
                    side = "a" if shown["a"].startswith("good") else "b"
                    assert c.post("/api/vote", json={"comparison_id": shown["comparison_id"], "session": s,
                                                     "verdict": side}).status_code == 200

        threads = [threading.Thread(target=voter, args=(5,)) for _ in range(4)]
        [t.start() for t in threads]
        [t.join(30) for t in threads]
        board = client.get("/api/leaderboard").json()
        assert board["votes"] == 21 == store.count()
        assert [r["model"] for r in board["rows"]] == ["good", "bad"] and board["rows"][0]["wins"] == 21
    assert store.integrity() == "ok"


def test_app_refuses_bad_settings(tmp_path, results):
    store = VoteStore(tmp_path / "votes.sqlite3")
    with pytest.raises(UserError, match="two or more models"):
        create_app(read_results(results[:1]), store)
    with pytest.raises(ValueError, match="both_bad"):
        create_app(read_results(results), store, both_bad="maybe")
    with pytest.raises(ValueError, match="prior must be above 0"):
        create_app(read_results(results), store, prior=0)


def test_recipe_generates_answers_with_tiny_models(tmp_path):
    from llmlab.infer.pretrained import Pretrained
    from llmlab.models import Transformer, get_preset
    from llmlab.recipes.arena import ArenaArgs, build_pool, split_name
    from llmlab.tokenizer import Tokenizer

    tok = Tokenizer.train("some text to answer with " * 100, 300, special_tokens=("<|endoftext|>",))
    for name in ("one", "two"):
        model = Transformer(get_preset("llama-tiny", n_layer=1, n_embd=32, vocab_size=tok.vocab_size, seq_len=64))
        Pretrained(model.eval(), tok, name).save_pretrained(tmp_path / name)
    (tmp_path / "prompts.txt").write_text("say some text\nanswer\n", encoding="utf-8")
    args = ArenaArgs(models=[f"first={tmp_path / 'one'}", str(tmp_path / "two")], prompts=str(tmp_path / "prompts.txt"),
                     max_new_tokens=4, progress=False)
    pool = build_pool(args, tmp_path / "out")
    assert pool.models == ["first", "two"] and len(pool.matchups()) == 2
    saved = read_results([str(tmp_path / "out" / "answers.jsonl")])  # reusable as --results
    assert saved.answers == pool.answers
    assert split_name("runs/sft/checkpoint/") == ("sft", "runs/sft/checkpoint/")
    assert split_name("models/smol.gguf") == ("smol", "models/smol.gguf")
    with pytest.raises(UserError, match="both called 'one'"):
        build_pool(ArenaArgs(models=[str(tmp_path / "one"), f"one={tmp_path / 'two'}"], progress=False), tmp_path)
    with pytest.raises(UserError, match="give two or more --models"):
        build_pool(ArenaArgs(), tmp_path)


def test_recipe_serves_until_interrupted_then_writes_the_leaderboard(tmp_path, results):
    from llmlab.recipes.arena import ArenaArgs, run

    db, out = tmp_path / "votes.sqlite3", tmp_path / "board"
    code = ("from llmlab.recipes.arena import ArenaArgs, run; "
            f"run(ArenaArgs(results={results!r}, db={str(db)!r}, out={str(out)!r}, port=0, bootstrap=20))")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    try:
        url = None
        while url is None:
            url = re.search(r"open (http://127\.0\.0\.1:\d+)", lines.get(timeout=60))
        with httpx.Client(base_url=url.group(1), timeout=10) as client:
            shown = client.post("/api/next", json={}).json()
            client.post("/api/vote", json={"comparison_id": shown["comparison_id"], "session": shown["session"],
                                           "verdict": "tie"}).raise_for_status()
        proc.send_signal(signal.SIGINT)  # Ctrl-C: stop serving, then write the leaderboard
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    board = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    assert board["votes"] == 1 and [r["ties"] for r in board["rows"]] == [1, 1]
    assert (out / "leaderboard.png").stat().st_size > 1000
    assert "| rank | model |" in (out / "leaderboard.md").read_text(encoding="utf-8")

    rows = run(ArenaArgs(db=str(db), leaderboard_only=True, bootstrap=20, both_bad="exclude"))
    assert rows == json.loads((tmp_path / "leaderboard.json").read_text(encoding="utf-8"))["rows"]  # db's folder
    with pytest.raises(UserError, match="--prior must be above 0"):
        run(ArenaArgs(db=str(db), leaderboard_only=True, prior=0))
    with pytest.raises(UserError, match="typo.sqlite3: no such vote database"):
        run(ArenaArgs(db=str(tmp_path / "typo.sqlite3"), leaderboard_only=True))
    VoteStore(tmp_path / "new" / "votes.sqlite3")
    assert run(ArenaArgs(db=str(tmp_path / "new" / "votes.sqlite3"), leaderboard_only=True)) == []
    assert (tmp_path / "new" / "leaderboard.md").read_text(encoding="utf-8") == "No votes yet.\n"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium at /usr/bin/chromium")
def test_browser_votes_persist_and_move_the_leaderboard(tmp_path, results):
    sync_api = pytest.importorskip("playwright.sync_api")
    db = tmp_path / "votes.sqlite3"
    clicked = []  # (comparison id, verdict, the model shown as A), in voting order

    def vote(page, verdict: str | None = None) -> None:
        """Wait for a fresh comparison, then click `verdict` (None: the side showing the good answer)."""
        previous = clicked[-1][0] if clicked else ""
        page.wait_for_function("prev => document.body.dataset.comparison !== undefined && "
                               "document.body.dataset.comparison !== prev && !document.getElementById('vote-a')"
                               ".disabled", arg=previous)
        a = page.inner_text("#answer-a")
        verdict = verdict or ("a" if a.startswith("good") else "b")
        clicked.append((page.evaluate("document.body.dataset.comparison"), verdict, a.split()[0]))
        page.click(f"button[data-verdict='{verdict}']")

    def board(page, url: str, votes: int) -> list[str]:
        page.goto(url + "/leaderboard")
        page.wait_for_selector(f"body[data-votes='{votes}']")
        return [row.get_attribute("data-model") for row in page.query_selector_all("#board tbody tr")]

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(10_000)
            requests = []
            page.on("request", lambda r: requests.append(r.url))
            with BackgroundServer(create_app(read_results(results), VoteStore(db), seed=0, rounds=20)) as url:
                assert board(page, url, 0) == [] and page.inner_text("#summary") == "No votes yet."
                page.goto(url + "/")
                for verdict in ("a", "b", "tie", "both_bad", None, None, None):
                    vote(page, verdict)
                page.wait_for_function("prev => document.body.dataset.comparison !== prev", arg=clicked[-1][0])
                assert page.inner_text("#status") == "Recorded: 7 votes so far."  # no model names: no bias
                assert board(page, url, 7)[0] == "good"
                assert all(u.startswith(url) for u in requests)  # nothing loaded from elsewhere
            stored = VoteStore(db).votes()
            assert [(v["comparison_id"], v["verdict"], v["model_a"]) for v in stored] == clicked

            with BackgroundServer(create_app(read_results(results), VoteStore(db), seed=1, rounds=20)) as url:
                page.goto(url + "/")  # a restarted server on the same file
                vote(page, "b")
                page.wait_for_function("prev => document.body.dataset.comparison !== prev", arg=clicked[-1][0])
                rows = board(page, url, 8)
                assert page.inner_text("#summary") == "8 votes" and len(rows) == 2
        finally:
            browser.close()
    stored = VoteStore(db).votes()
    assert [(v["comparison_id"], v["verdict"], v["model_a"]) for v in stored] == clicked
    assert VoteStore(db).integrity() == "ok"
