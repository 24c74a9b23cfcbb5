"""The leaderboard as files: a Markdown table, the rows as JSON, and a PNG of ratings with their intervals.

The rows are `llmlab.eval.ratings.leaderboard`'s; nothing is computed here.
"""

from pathlib import Path

from llmlab.common.io import atomic_write, write_json_atomic, write_text_atomic


def markdown(rows: list[dict], confidence: float = 0.95) -> str:
    """A table, best first: rank, model, Bradley-Terry and Elo ratings with intervals, votes, wins/losses/ties."""
    pct = f"{confidence:.0%}"
    lines = [f"| rank | model | Bradley-Terry ({pct} CI) | Elo ({pct} CI) | votes | wins | losses | ties |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['rank']} | {r['model']} | {r['bt']:.0f} ({r['bt_low']:.0f} to {r['bt_high']:.0f}) "
                     f"| {r['elo']:.0f} ({r['elo_low']:.0f} to {r['elo_high']:.0f}) | {r['votes']} | {r['wins']} "
                     f"| {r['losses']} | {r['ties']} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str | Path, title: str = "arena ratings") -> None:
    """Each model's two ratings as points with their bootstrap intervals as bars, best at the top."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 1.8 + 0.5 * len(rows)))
    y = list(range(len(rows)))[::-1]
    for key, offset, marker in (("bt", 0.12, "o"), ("elo", -0.12, "s")):
        mid = [r[key] for r in rows]
        err = [[m - r[f"{key}_low"] for m, r in zip(mid, rows, strict=True)],
               [r[f"{key}_high"] - m for m, r in zip(mid, rows, strict=True)]]
        ax.errorbar(mid, [v + offset for v in y], xerr=err, fmt=marker, capsize=3,
                    label="Bradley-Terry" if key == "bt" else "Elo")
    ax.set_yticks(y, [r["model"] for r in rows])
    ax.set_xlabel("rating (Elo scale: +400 = 10:1 odds)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2, frameon=False)  # below: off the bars
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def write_leaderboard(rows: list[dict], out: str | Path, meta: dict | None = None) -> list[Path]:
    """leaderboard.md, leaderboard.json ({**meta, "rows": rows}) and, when there are rows, leaderboard.png."""
    out = Path(out)
    paths = [out / "leaderboard.md", out / "leaderboard.json"]
    write_text_atomic(paths[0], markdown(rows) if rows else "No votes yet.\n")
    write_json_atomic(paths[1], {**(meta or {}), "rows": rows})
    if rows:
        paths.append(out / "leaderboard.png")
        plot(rows, paths[2])
    return paths
