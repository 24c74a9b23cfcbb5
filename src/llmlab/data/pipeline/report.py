"""The run report: `report.json` (everything), `report.md` (tables to read) and two plots.

Per stage: documents and bytes in and out, each drop reason with its count and first examples, the
stage's own counters (PII found, lines removed, languages seen), duplicate-cluster sizes for the dedup
stages, tokens per source for mixing, and seconds spent. Plots: documents kept per stage (`stages.png`)
and the duplicate-cluster size histogram (`clusters.png`, when a dedup stage ran).
"""

import json
from pathlib import Path

from llmlab.common.io import atomic_write, write_json_atomic, write_text_atomic


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


def render_markdown(r: dict) -> str:
    lines = [f"# {r.get('title', 'pipeline')} report", "",
             f"{r['documents_in']:,} documents ({_mb(r['bytes_in'])} MB) in, {r['documents_out']:,} "
             f"({_mb(r['bytes_out'])} MB) out, in {r['wall_s']:.1f} s on the {r['executor']} executor "
             f"({r['workers']} worker(s), {r['shards']} shard(s)).", "",
             "| # | stage | docs in | docs out | dropped | MB in | MB out | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for i, s in enumerate(r["stages"]):
        lines.append(f"| {i} | {s['name']} | {s['docs_in']:,} | {s['docs_out']:,} | {sum(s['dropped'].values()):,} "
                     f"| {_mb(s['bytes_in'])} | {_mb(s['bytes_out'])} | {s['seconds']:.1f} |")
    if r.get("sources_out"):
        lines += ["", "## Output per source", "", "| source | documents | MB |", "|---|---|---|"]
        lines += [f"| {src} | {v['documents']:,} | {_mb(v['bytes'])} |" for src, v in r["sources_out"].items()]
    for i, s in enumerate(r["stages"]):
        if not (s["dropped"] or s["counters"] or s["info"]):
            continue
        lines += ["", f"## {i}. {s['name']}", ""]
        if s["dropped"]:
            lines += ["| dropped because | documents |", "|---|---|"]
            lines += [f"| {reason} | {n:,} |" for reason, n in sorted(s["dropped"].items(), key=lambda kv: -kv[1])]
            lines.append("")
        if s["counters"]:
            lines.append("Counts: " + ", ".join(f"{k} {v:,}" for k, v in sorted(s["counters"].items())) + ".")
            lines.append("")
        for key, value in s["info"].items():
            lines.append(f"- {key}: {json.dumps(value, ensure_ascii=False)}")
        for reason, examples in s["examples"].items():
            lines += ["", f"Examples, {reason}:", ""]
            for ex in examples:
                detail = f" ({ex['detail']})" if ex.get("detail") else ""
                lines.append(f"- `{ex['id']}`{detail}: {ex['text'].replace('|', '/')}")
    lines += ["", "![documents per stage](stages.png)", ""]
    if any(s["info"].get("cluster sizes") for s in r["stages"]):
        lines += ["![duplicate cluster sizes](clusters.png)", ""]
    lines += ["## Pipeline", "", "```json", json.dumps(r["pipeline"], indent=2), "```", ""]
    return "\n".join(lines)


def plot_report(r: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    names = [f"{i}. {s['name']}" for i, s in enumerate(r["stages"])]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5))
    ax.barh(names, [s["docs_in"] for s in r["stages"]], color="#ddd", label="in")
    ax.barh(names, [s["docs_out"] for s in r["stages"]], color="#3a7", label="out")
    ax.invert_yaxis()
    ax.set_xlabel("documents")
    ax.set_title("documents in and out of each stage")
    ax.legend()
    fig.tight_layout()
    atomic_write(out / "stages.png", lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    hists = {s["name"]: s["info"]["cluster sizes"] for s in r["stages"] if s["info"].get("cluster sizes")}
    if hists:
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, hist in hists.items():
            sizes = sorted(hist, key=int)
            ax.plot([int(k) for k in sizes], [hist[k] for k in sizes], "o-", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("cluster size (documents)")
        ax.set_ylabel("clusters")
        ax.set_title("duplicate clusters")
        ax.legend()
        fig.tight_layout()
        atomic_write(out / "clusters.png", lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
        plt.close(fig)


def write_report(r: dict, out: str | Path) -> None:
    out = Path(out)
    write_json_atomic(out / "report.json", r)
    write_text_atomic(out / "report.md", render_markdown(r))
    plot_report(r, out)
