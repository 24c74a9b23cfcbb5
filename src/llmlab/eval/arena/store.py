"""The arena's votes in SQLite: every comparison shown, every vote cast, nothing lost on a crash.

Two tables. `comparisons` records each pair the server showed (id, session, prompt id, the models on the
left (A) and right (B) side, when); `votes` records at most one verdict per comparison, by the session it
was shown to. A vote for an unknown comparison, from another session, or a second vote on the same
comparison is refused (`VoteError` with an HTTP status), so votes cannot be forged or counted twice.

Durability and concurrency:
- WAL journal (`PRAGMA journal_mode=WAL`, a property of the file): readers never block the writer, and a
  writer killed mid-transaction leaves the last committed state intact.
- `synchronous=FULL`: each commit waits for the WAL to reach the disk, so an acknowledged vote survives a
  power cut too. NORMAL would survive a killed server but may lose the last commits on power loss; a vote is
  a human click, a few per second at most, so the fsync costs nothing noticeable.
- One short-lived connection per operation with a busy timeout: concurrent writers (threads of one server,
  or several processes) wait their turn instead of failing, and no connection is shared across threads.
- One commit per vote, in a `BEGIN IMMEDIATE` transaction that takes the write lock before reading.
"""

import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llmlab.common.errors import UserError
from llmlab.eval.ratings import Match

VERDICTS = ("a", "b", "tie", "both_bad")
SCHEMA_VERSION = 1
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS comparisons (
        id TEXT PRIMARY KEY,
        session TEXT NOT NULL,
        prompt_id TEXT NOT NULL,
        model_a TEXT NOT NULL,  -- shown on the left, as answer A
        model_b TEXT NOT NULL,  -- shown on the right, as answer B
        issued_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS votes (
        seq INTEGER PRIMARY KEY,  -- the order votes arrived in, which Elo follows
        comparison_id TEXT NOT NULL UNIQUE REFERENCES comparisons(id),
        session TEXT NOT NULL,
        verdict TEXT NOT NULL CHECK (verdict IN ('a', 'b', 'tie', 'both_bad')),
        voted_at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS votes_by_session ON votes(session)",
)


class VoteError(Exception):
    """A refused vote; `status` is the HTTP status that says why (404, 403, 409, 422)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class VoteStore:
    """Comparisons and votes in one SQLite file (created with its folder when missing)."""

    def __init__(self, path: str | Path, timeout: float = 30.0):
        self.path = Path(path)
        self.timeout = timeout  # seconds a connection waits for another writer's lock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.connect() as conn:
                conn.execute("PRAGMA journal_mode=WAL")  # not inside a transaction
            with self.transaction() as conn:  # several processes may open a new file at once
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if version not in (0, SCHEMA_VERSION) or (version == 0 and tables):
                    raise UserError(f"{self.path}: not an arena vote database (schema {version}); "
                                    "give a new database path")
                for statement in SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as e:
            raise UserError(f"{self.path}: cannot open as SQLite ({e}); give a new database path") from None

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection in autocommit mode (transactions are explicit), closed on exit."""
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=FULL")  # per connection, not stored in the file
            conn.execute("PRAGMA foreign_keys=ON")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: the lock is taken up front, committed on success, rolled back on error."""
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def issue(self, session: str, prompt_id: str, model_a: str, model_b: str) -> str:
        """Record a comparison shown to `session` and return its id (unguessable, so it cannot be forged)."""
        comparison_id = secrets.token_urlsafe(12)
        with self.transaction() as conn:
            conn.execute("INSERT INTO comparisons VALUES (?, ?, ?, ?, ?, ?)",
                         (comparison_id, session, prompt_id, model_a, model_b, time.time()))
        return comparison_id

    def vote(self, comparison_id: str, session: str, verdict: str) -> dict:
        """Record one verdict (one of VERDICTS) and return the comparison it settles."""
        if verdict not in VERDICTS:
            raise VoteError(422, f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
        with self.transaction() as conn:
            row = conn.execute("SELECT session, prompt_id, model_a, model_b FROM comparisons WHERE id = ?",
                               (comparison_id,)).fetchone()
            if row is None:
                raise VoteError(404, f"no comparison {comparison_id!r} was issued")
            if row[0] != session:
                raise VoteError(403, "this comparison was issued to another session")
            try:
                conn.execute("INSERT INTO votes (comparison_id, session, verdict, voted_at) VALUES (?, ?, ?, ?)",
                             (comparison_id, session, verdict, time.time()))
            except sqlite3.IntegrityError:
                raise VoteError(409, f"comparison {comparison_id!r} already has a vote") from None
        return {"comparison_id": comparison_id, "prompt_id": row[1], "model_a": row[2], "model_b": row[3],
                "verdict": verdict}

    def votes(self) -> list[dict]:
        """Every vote with its comparison, in the order the votes arrived."""
        with self.connect() as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT v.seq, v.comparison_id, v.session, c.prompt_id, c.model_a, c.model_b, "
                                "v.verdict, c.issued_at, v.voted_at FROM votes v "
                                "JOIN comparisons c ON c.id = v.comparison_id ORDER BY v.seq").fetchall()
        return [dict(r) for r in rows]

    def voted(self, session: str) -> set[tuple[str, str, str]]:
        """(prompt id, model, model) with the two models sorted, for each comparison `session` voted on."""
        with self.connect() as conn:
            rows = conn.execute("SELECT c.prompt_id, c.model_a, c.model_b FROM votes v "
                                "JOIN comparisons c ON c.id = v.comparison_id WHERE v.session = ?",
                                (session,)).fetchall()
        return {(p, *sorted((a, b))) for p, a, b in rows}

    def count(self) -> int:
        with self.connect() as conn:
            return conn.execute("SELECT count(*) FROM votes").fetchone()[0]

    def integrity(self) -> str:
        """SQLite's own check of the file: "ok" when nothing is corrupt."""
        with self.connect() as conn:
            return conn.execute("PRAGMA integrity_check").fetchone()[0]


def matches(votes: list[dict], both_bad: str = "tie") -> list[Match]:
    """Votes as rating matches (model_a, model_b, score_a): a -> 1, b -> 0, tie -> 0.5.

    A "both bad" vote says neither answer was better, which is what a tie says about the two models' relative
    strength, so by default it counts as a tie (as Chatbot Arena counts "tie (bothbad)"); `both_bad="exclude"`
    drops it instead, for when bad pairs mostly mean hard prompts.
    [{"model_a": "x", "model_b": "y", "verdict": "b"}] -> [("x", "y", 0.0)].
    """
    if both_bad not in ("tie", "exclude"):
        raise ValueError(f"both_bad must be 'tie' or 'exclude', got {both_bad!r}")
    score = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}
    return [(v["model_a"], v["model_b"], score[v["verdict"]]) for v in votes
            if not (v["verdict"] == "both_bad" and both_bad == "exclude")]
