"""The optimizers lab end to end: 2 optimizers x 2 learning rates x a few steps on a tiny model."""

import json

import pytest

import llmlab
from llmlab.cli import main
from llmlab.common.errors import UserError
from llmlab.recipes.optimizers import OptimizersArgs, run

TINY = dict(n_layer=1, n_head=2, n_embd=32, seq_len=32, batch_size=4, max_steps=6, warmup_steps=2, eval_tokens=512,
            progress=False, device="cpu")


def test_lab_sweeps_reports_and_saves_the_best(tmp_path, data_dir):
    out = tmp_path / "lab"
    summary = run(OptimizersArgs(out=str(out), data=str(data_dir), optimizers=["adamw", "muon"],
                                 lr_scales=[0.5, 2.0], **TINY))
    assert [r["optimizer"] for r in summary["runs"]] == ["adamw", "adamw", "muon", "muon"]
    assert [r["lr"] for r in summary["runs"]] == pytest.approx([1.5e-3, 6e-3, 5e-3, 2e-2])  # BASE_LR x scales
    for r in summary["runs"]:
        assert r["diverged_at"] is None and 0 < r["final_val_loss"] < 10 and len(r["curve"]) == 6
    for name in ("adamw", "muon"):  # the best lr is the one with the lowest final held-out loss
        ours = [r for r in summary["runs"] if r["optimizer"] == name]
        assert summary["best"][name]["final_val_loss"] == min(r["final_val_loss"] for r in ours)
    report = (out / "report.md").read_text()
    assert "| adamw |" in report and "| muon |" in report
    assert json.loads((out / "report.json").read_text())["best"] == summary["best"]
    for png in ("loss_curves.png", "lr_sweep.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    winner = min(summary["best"].values(), key=lambda b: b["final_val_loss"])
    assert llmlab.load(out).model.config.n_layer == 1  # the best run reopens
    assert winner["final_val_loss"] == min(r["final_val_loss"] for r in summary["runs"])


def test_bad_grids_are_refused(tmp_path, data_dir):
    with pytest.raises(UserError, match="positive"):
        run(OptimizersArgs(out=str(tmp_path), data=str(data_dir), lrs=[-1.0], **TINY))
    with pytest.raises(UserError, match="at least one optimizer"):
        run(OptimizersArgs(out=str(tmp_path), data=str(data_dir), optimizers=[], **TINY))
    with pytest.raises(SystemExit, match="2"):  # argparse: not one of the choices
        main(["compare", "optimizers", "--optimizers", "rmsprop", "--out", str(tmp_path)])
