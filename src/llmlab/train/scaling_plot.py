"""The scaling sweep's three PNGs: the law against the runs, the isoFLOP curves, and the compute-optimal frontier.

Plots only; the numbers come from `llmlab.train.scaling`. Each function takes plain run dicts
(n, d, c, loss) and the fits, and writes one file atomically.
"""

from pathlib import Path

import numpy as np

from llmlab.common.io import atomic_write
from llmlab.train.scaling import IsoFLOPFit, LawFit


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))


def plot_law(runs: list[dict], fit: LawFit, path: str | Path, beyond: dict | None = None) -> None:
    """Loss against tokens D, one colour per model size: the runs as dots, L(N, D) as lines; the size beyond
    the grid as a predicted star (with its interval) and a measured cross."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = sorted({r["n"] for r in runs} | ({beyond["n"]} if beyond else set()))
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(sizes)))
    d_all = [r["d"] for r in runs] + ([beyond["d"]] if beyond else [])
    d_line = np.geomspace(min(d_all) / 1.5, max(d_all) * 1.5, 100)
    for n, colour in zip(sizes, colours, strict=True):
        mine = [r for r in runs if r["n"] == n]
        ax.plot(d_line, fit.predict(n, d_line), color=colour, linewidth=1, label=f"N={n / 1e3:.0f}k")
        ax.scatter([r["d"] for r in mine], [r["loss"] for r in mine], color=colour, s=22, zorder=3)
    if beyond:
        lo, hi = beyond["interval"]
        # a bootstrap interval need not contain the full-data prediction: clip the bars at the point
        yerr = [[max(0.0, beyond["predicted"] - lo)], [max(0.0, hi - beyond["predicted"])]]
        ax.errorbar([beyond["d"]], [beyond["predicted"]], yerr=yerr,
                    fmt="*", color="crimson", markersize=12, capsize=3, label="predicted (beyond the grid)")
        if beyond.get("loss") is not None:
            ax.scatter([beyond["d"]], [beyond["loss"]], marker="x", color="black", s=60, zorder=4, label="measured")
    ax.set_xscale("log")
    ax.set_xlabel("training tokens D")
    ax.set_ylabel("validation loss (nats per token)")
    ax.set_title(f"L(N, D) = {fit.E:.2f} + {fit.A:.3g}/N^{fit.alpha:.2f} + {fit.B:.3g}/D^{fit.beta:.2f}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)


def plot_isoflop(iso: IsoFLOPFit, path: str | Path) -> None:
    """Per compute budget, loss against N with its parabola in log N and the vertex marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.cm.plasma(np.linspace(0, 0.85, max(1, len(iso.budgets))))
    for b, colour in zip(iso.budgets, colours, strict=True):
        ax.scatter(b["n"], b["loss"], color=colour, s=22, zorder=3)
        x = np.geomspace(min(b["n"]) / 1.3, max(b["n"]) * 1.3, 100)
        ax.plot(x, np.polyval(b["coef"], np.log(x)), color=colour, linewidth=1, label=f"C={b['c']:.2g} FLOPs")
        if b["n_opt"] is not None:
            ax.scatter([b["n_opt"]], [b["loss_opt"]], marker="v" if b["inside"] else "^", color=colour, s=60,
                       edgecolor="black", zorder=4)
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("validation loss (nats per token)")
    ax.set_title("IsoFLOP curves (approach 2); triangles: minima (up: outside the sizes trained)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)


def plot_frontier(iso: IsoFLOPFit, fit: LawFit, runs: list[dict], path: str | Path) -> None:
    """The compute-optimal N against C: approach 2's vertices and power law, approach 3's closed form."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    cs = [r["c"] for r in runs]
    c_line = np.geomspace(min(cs) / 3, max(cs) * 30, 100)
    ax.scatter(cs, [r["n"] for r in runs], color="lightgray", s=16, label="runs")
    ax.plot(c_line, fit.optimal(c_line)[0], color="tab:blue",
            label=f"approach 3: N_opt ~ C^{fit.beta / (fit.alpha + fit.beta):.2f}")
    vertices = [b for b in iso.budgets if b["n_opt"] is not None]
    if vertices:
        ax.scatter([b["c"] for b in vertices], [b["n_opt"] for b in vertices], color="tab:orange", zorder=3,
                   label="approach 2: isoFLOP minima")
    if iso.a is not None:
        ax.plot(c_line, iso.n_opt(c_line), color="tab:orange", linestyle="--", label=f"N_opt ~ C^{iso.a:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C = 6ND (FLOPs)")
    ax.set_ylabel("compute-optimal N")
    ax.set_title("compute-optimal frontier")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)
