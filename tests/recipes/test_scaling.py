"""`llmlab scaling sweep` on a tiny grid: it writes its report and plots, the model beyond the grid reopens
with llmlab.load, a rerun trains nothing, and changed settings or bad sizes are refused."""

import json

import pytest

import llmlab
from llmlab.common.errors import UserError
from llmlab.recipes import scaling
from llmlab.recipes.scaling import SweepArgs, size_config, sweep


def _args(data_dir, out, **kw) -> SweepArgs:
    # min_flops fixes the grid whatever this machine's speed: 1x16 trains 15 steps at C_0, 2x32 2 steps
    base = dict(budget=0.15, out=str(out), data=str(data_dir), sizes=["1x16", "1x24", "2x32"], beyond="2x48",
                budgets=2, min_flops=2.5e7, seq_len=16, batch_size=4, min_steps=2, eval_tokens=256, bootstrap=10,
                device="cpu", progress=False)
    return SweepArgs(**{**base, **kw})


def test_tiny_sweep_then_rerun(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    report = sweep(_args(data_dir, out))
    for name in ("report.md", "report.json", "plan.json", "prediction.json", "law.png", "isoflop.png",
                 "frontier.png"):
        assert (out / name).stat().st_size > 0, name
    runs, beyond = report["runs"], report["beyond"]
    assert len(runs) >= 5 and all(r["loss"] > 0 for r in runs)
    assert beyond["n"] > max(r["n"] for r in runs) and beyond["loss"] > 0
    assert beyond["interval"][0] <= beyond["interval"][1]
    for r in runs:  # each run trained the tokens its plan gave it, on its own cosine schedule
        assert r["d"] == r["steps"] * 4 * 16
        assert json.loads((out / "runs" / r["name"] / "history.json").read_text())[-1]["step"] == r["steps"]
    assert json.loads((out / "prediction.json").read_text())["predicted"] == beyond["predicted"]
    loaded = llmlab.load(out)  # the model beyond the grid
    assert loaded.model.config.n_layer == 2 and loaded.model.config.n_embd == 48

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(scaling, "pretrain", no_training)
    again = sweep(_args(data_dir, out))
    assert again["law"] == report["law"] and again["beyond"] == beyond
    with pytest.raises(UserError, match="planned with other settings"):
        sweep(_args(data_dir, out, lr=1e-3))


def test_bad_sizes(data_dir, tmp_path):
    with pytest.raises(UserError, match="LAYERSxWIDTH"):
        size_config("wide", "llama-tiny", 320, 16)
    with pytest.raises(UserError, match="at least 3 sizes"):
        sweep(_args(data_dir, tmp_path / "a", sizes=["1x16", "1x24"]))
    with pytest.raises(UserError, match="larger than every grid size"):
        sweep(_args(data_dir, tmp_path / "b", beyond="1x16"))
