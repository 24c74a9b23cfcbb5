"""`llmlab compare diloco` on a tiny model: every run, bytes in the ratio H, a report and a loadable model."""

import json

import pytest

import llmlab
from llmlab.common.checkpoint import read_meta
from llmlab.common.errors import UserError
from llmlab.recipes.diloco import DiLoCoArgs, run


def _args(data_dir, out, **kw) -> DiLoCoArgs:
    base = dict(out=str(out), data=str(data_dir), seq_len=16, batch_size=2, max_steps=4, inner_steps=[2],
                warmup_steps=1, eval_interval=2, eval_tokens=64, progress=False, timeout_minutes=3)
    return DiLoCoArgs(**{**base, **kw})


def test_compare_diloco_end_to_end(data_dir, tmp_path):
    out = tmp_path / "diloco"
    report = run(_args(data_dir, out))
    runs = {r["name"]: r for r in report["runs"]}
    assert list(runs) == ["ddp", "diloco-H2", "diloco-H2-int8-row"]
    # DDP all-reduces every float32 gradient each step; on 2 ranks a ring sends 2(p-1)/p = 1x the bytes
    assert runs["ddp"]["bytes_per_worker"] == 4 * 4 * report["n_params"]
    assert runs["ddp"]["bytes_per_worker"] == 2 * runs["diloco-H2"]["bytes_per_worker"]  # H times fewer
    assert runs["diloco-H2-int8-row"]["bytes_per_worker"] < runs["diloco-H2"]["bytes_per_worker"] / 3.5
    for r in runs.values():
        assert r["steps"] == 4 and [e["step"] for e in r["evals"]] == [2, 4]
        assert all(e["val_loss"] > 0 for e in r["evals"]) and len(r["train_loss"]) == 4
    assert runs["diloco-H2"]["syncs"] == 2 and runs["ddp"]["syncs"] == 4
    for name in ("report.md", "report.json", "diloco.png"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "report.json").read_text())["best_diloco"] == report["best_diloco"]
    assert read_meta(out / "checkpoint")["run"]["chosen_run"] == report["best_diloco"]
    loaded = llmlab.load(out)
    assert loaded.model.config.seq_len == 16 and loaded.tokenizer is not None


@pytest.mark.parametrize("kw, match", [
    (dict(inner_steps=[0]), "inner-steps"),
    (dict(inner_steps=[10]), "more than --max-steps"),
    (dict(workers=0), "at least 1"),
])
def test_bad_settings_are_user_errors(data_dir, tmp_path, kw, match):
    with pytest.raises(UserError, match=match):
        run(_args(data_dir, tmp_path / "x", **kw))


def test_missing_data_folder(tmp_path):
    with pytest.raises(UserError, match="manifest"):
        run(_args(tmp_path / "nowhere", tmp_path / "x"))
