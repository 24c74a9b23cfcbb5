"""`llmlab compare sharding`: equal to the unsharded MLP, bytes equal to the formulas, a report."""

import pytest

from llmlab.common.errors import UserError
from llmlab.recipes.sharding import ShardingArgs, run


def test_compare_sharding_end_to_end(tmp_path):
    out = tmp_path / "sharding"
    report = run(ShardingArgs(out=str(out), n_tokens=8, n_embd=16, hidden=32, sweep_worlds=[2, 3],
                              volume_numel=1200, repeats=1))
    assert report["all_equal"] and len(report["equivalence"]) == 4
    assert {(r["world"], r["op"], r["impl"]) for r in report["volume"]} == {
        (p, op, impl) for p in (2, 3) for op in ("all_reduce", "all_gather", "reduce_scatter")
        for impl in ("torch", "ring")}
    for r in report["volume"]:
        assert r["sent"] == r["formula"] and r["max_diff_vs_torch"] < 1e-5
    for name in ("report.md", "report.json", "volume.png"):
        assert (out / name).stat().st_size > 0
    assert "| 3 | all_reduce | 4,800 | 6,400 | 6,400 | yes |" in (out / "report.md").read_text()


@pytest.mark.parametrize("kw, match", [
    (dict(hidden=33), "does not split"),
    (dict(sweep_worlds=[1, 2]), "at least 2"),
    (dict(volume_numel=1001), "reduce-scatter"),
])
def test_bad_settings_are_user_errors(tmp_path, kw, match):
    with pytest.raises(UserError, match=match):
        run(ShardingArgs(out=str(tmp_path / "x"), **kw))
