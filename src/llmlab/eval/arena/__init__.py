"""The arena: people vote between two anonymised answers to the same prompt, and a leaderboard ranks the models.

    pool.py     prompts and each model's answers (results files, JSONL), and the random draw of a pair
    store.py    comparisons shown and votes cast, in SQLite (WAL, a commit per vote)
    app.py      the FastAPI app: the voting page, the leaderboard page, the JSON API
    server.py   uvicorn on 127.0.0.1, in the foreground or on a background thread
    board.py    the leaderboard as Markdown, JSON and a PNG

The ratings themselves (Elo, Bradley-Terry, bootstrap intervals) are `llmlab.eval.ratings`. Generating the
answers is the caller's (the `llmlab eval arena` recipe loads each model and answers the prompts greedily).
"""
