"""`llmlab compare sharding`: the sharded-matmul lab. A Megatron MLP split by hand, and what it sends.

    llmlab compare sharding --out runs/sharding
    llmlab compare sharding --world-size 4 --sweep-worlds 2 4 8 --volume-numel 4800000

Two parts, each in local processes joined by gloo (`llmlab.train.spawn`):

1. Equivalence: a 2-layer MLP (column-parallel fc, row-parallel proj; `llmlab.train.sharded`) on
   --world-size ranks, with and without sequence parallelism, through torch.distributed's collectives and
   through the hand-written ring. Output and every gradient against the unsharded MLP, and the collectives
   each forward + backward made, with their bytes.
2. Volume: all-reduce, all-gather and reduce-scatter of --volume-numel float32 values on each world size of
   --sweep-worlds: the bytes each rank sent in the ring (counted) against the formulas, and seconds per call.

Writes report.md, report.json and volume.png (bytes sent per rank / tensor bytes against p, counted and
formula). Trains nothing, so it writes no checkpoint.
"""

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from llmlab.common import log
from llmlab.common.config import arg
from llmlab.common.errors import UserError
from llmlab.common.io import atomic_write, write_json_atomic, write_text_atomic
from llmlab.train.collectives import FORMULAS
from llmlab.train.sharded import collective_volume, mlp_equivalence_modes
from llmlab.train.spawn import spawn

TOLERANCE = 1e-5  # float32 sums in another order differ by a few ulps, nothing more


@dataclass
class ShardingArgs:
    out: str = arg("runs/sharding", "output folder: report.md, report.json, volume.png")
    world_size: int = arg(2, "ranks for the MLP equivalence check")
    n_tokens: int = arg(64, "tokens (rows) of the MLP's input; a multiple of --world-size")
    n_embd: int = arg(128, "MLP width C")
    hidden: int = arg(512, "MLP hidden width (4C, as GPT-2's); a multiple of --world-size")
    sweep_worlds: list[int] = arg([2, 3, 4], "world sizes for the communication-volume sweep")
    volume_numel: int = arg(1_200_000, "float32 values per collective in the sweep (divisible by 2..6)")
    repeats: int = arg(3, "timed calls per collective (the fastest is kept)")
    seed: int = arg(0, "seed of the MLP's weights and input")
    timeout_minutes: float = arg(5.0, "kill the processes of a part that takes longer than this")


def _check(args: ShardingArgs) -> None:
    if args.world_size < 2 or min(args.sweep_worlds, default=0) < 2:
        raise UserError("--world-size and every --sweep-worlds value must be at least 2 (one rank shards nothing)")
    for name in ("n_tokens", "hidden"):
        if getattr(args, name) % args.world_size:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)} does not split over "
                            f"--world-size {args.world_size}; give a multiple of it")
    bad = [p for p in args.sweep_worlds if args.volume_numel % p]
    if bad:
        raise UserError(f"--volume-numel {args.volume_numel} does not split over world sizes {bad}; "
                        "reduce-scatter needs equal parts")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    worlds = sorted({r["world"] for r in rows})
    grid = [w / 10 for w in range(10 * worlds[0], 10 * worlds[-1] + 1)]
    for i, op in enumerate(FORMULAS):
        ring = [r for r in rows if r["op"] == op and r["impl"] == "ring"]
        ax.plot(grid, [FORMULAS[op](1, p) for p in grid], "-", color=f"C{i}", alpha=0.5, label=f"{op} formula")
        # all-gather and reduce-scatter share a formula: hollow squares keep both visible
        ax.plot([r["world"] for r in ring], [r["sent"] / r["nbytes"] for r in ring], "o" if i != 1 else "s",
                color=f"C{i}", markersize=6 if i != 1 else 11, fillstyle="full" if i != 1 else "none",
                label=f"{op} counted (ring)")
    ax.set_xlabel("ranks p")
    ax.set_ylabel("bytes sent per rank / bytes of the tensor n")
    ax.set_xticks(worlds)
    ax.set_title("ring collectives: counted bytes against the formulas")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def _markdown(report: dict) -> str:
    cfg = report["config"]
    lines = [
        "# The sharded-matmul lab", "",
        f"A {cfg['n_embd']} -> {cfg['hidden']} -> {cfg['n_embd']} MLP on {cfg['n_tokens']} tokens, split over "
        f"{cfg['world_size']} ranks: fc column-parallel (each rank {cfg['hidden'] // cfg['world_size']} of the "
        f"hidden features), proj row-parallel. Largest absolute difference from the unsharded MLP, over ranks:", "",
        "| mode | collectives | y | dL/dx | fc.weight | fc.bias | proj.weight | proj.bias | equal | "
        "forward + backward sends (bytes per rank) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["equivalence"]:
        d = r["diffs"]
        ops = ", ".join(f"{c['op']} {c['sent']:,}" for c in r["records"])
        mode = "sequence parallel" if r["sequence_parallel"] else "tensor parallel"
        lines.append(f"| {mode} | {r['impl']} | " + " | ".join(f"{d[k]:.1e}" for k in
                     ("y", "dx", "fc.weight", "fc.bias", "proj.weight", "proj.bias"))
                     + f" | {'yes' if r['equal'] else '**no**'} | {ops} |")
    lines += ["", "Tensor parallelism all-reduces the (tokens x C) activation once forward (row-parallel output) "
              "and once backward (the input's gradient). Sequence parallelism replaces each all-reduce by an "
              "all-gather and a reduce-scatter, the same bytes, with the activations outside the MLP split too.",
              "", f"## Bytes per collective ({cfg['volume_numel']:,} float32 values)", "",
              "| p | collective | n (bytes) | formula | counted (ring) | equal | torch s | ring s | "
              "ring == torch |", "|---|---|---|---|---|---|---|---|---|"]
    by_key = {(r["world"], r["op"], r["impl"]): r for r in report["volume"]}
    for p in cfg["sweep_worlds"]:
        for op in FORMULAS:
            t, g = by_key[p, op, "torch"], by_key[p, op, "ring"]
            lines.append(f"| {p} | {op} | {g['nbytes']:,} | {g['formula']:,.0f} | {g['sent']:,} | "
                         f"{'yes' if g['sent'] == g['formula'] else 'no'} | {t['seconds']:.4f} | "
                         f"{g['seconds']:.4f} | {'yes' if g['max_diff_vs_torch'] < TOLERANCE else 'no'} |")
    lines += ["", "Formulas per rank, ring algorithms: all-reduce 2(p-1)/p n, all-gather (p-1)/p n (n: the "
              "gathered output), reduce-scatter (p-1)/p n. Torch's timings use gloo's own algorithms; on one "
              "machine's processes they measure copies and scheduling more than a network.", "",
              "![bytes against p](volume.png)", "",
              "## Configuration", "", "```json", json.dumps(cfg, indent=2), "```", ""]
    return "\n".join(lines)


def run(args: ShardingArgs) -> dict:
    _check(args)
    t0 = time.perf_counter()
    out = Path(args.out)
    timeout = args.timeout_minutes * 60
    log.info(f"[1/2] a sharded MLP on {args.world_size} ranks against the whole one")
    per_rank = spawn(mlp_equivalence_modes, args.world_size, args.n_tokens, args.n_embd, args.hidden, args.seed,
                     timeout=timeout)
    equivalence = []
    for i, first in enumerate(per_rank[0]):
        diffs = {k: max(r[i]["diffs"][k] for r in per_rank) for k in first["diffs"]}
        equivalence.append({"sequence_parallel": first["sequence_parallel"], "impl": first["impl"], "diffs": diffs,
                            "equal": max(diffs.values()) < TOLERANCE, "records": first["records"],
                            "seconds": max(r[i]["seconds"] for r in per_rank)})
    volume = []
    for p in args.sweep_worlds:
        log.info(f"[2/2] collectives of {args.volume_numel:,} values on {p} ranks")
        volume += spawn(collective_volume, p, args.volume_numel, args.repeats, timeout=timeout)[0]
    report = {"equivalence": equivalence, "volume": volume, "all_equal": all(e["equal"] for e in equivalence),
              "wall_s": time.perf_counter() - t0, "config": dataclasses.asdict(args)}
    out.mkdir(parents=True, exist_ok=True)
    _plot(volume, out / "volume.png")
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", _markdown(report))
    verdict = "equal to" if report["all_equal"] else "DIFFERENT from"
    log.info(f"sharded MLP {verdict} the whole one; report in {out / 'report.md'}")
    return report
