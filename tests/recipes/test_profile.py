"""`llmlab profile` on a tiny model: the trace, roofline and report exist, MFU and MBU are fractions, and
bad settings are refused."""

import json

import pytest

from llmlab.common.errors import UserError
from llmlab.recipes.profile import ProfileArgs, run


def _args(out, **kw) -> ProfileArgs:
    base = dict(preset="llama-tiny", out=str(out), device="cpu", batch_size=2, seq_len=32, steps=2,
                decode_tokens=4, profile_steps=1, top=8, matmul_size=512, copy_mb=16, bf16=False, compile=False)
    return ProfileArgs(**{**base, **kw})


def test_profile_report(tmp_path):
    report = run(_args(tmp_path, bf16=True))
    for name in ("report.md", "report.json", "trace.json", "roofline.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    t, d = report["training"], report["decoding"]
    assert 0 < t["mfu"] <= 1
    # MBU may pass 1 on a CPU: this model's 5 MB of weights can stay in cache, read faster than memory
    assert d["mbu"] > 0 and d["mbu"] == pytest.approx(d["bytes_per_token"] * d["tokens_per_s"] / report["bandwidth"])
    assert report["cache_bandwidth"] > 0
    assert t["achieved_flops"] == pytest.approx(t["flops_per_token"] * t["tokens_per_s"])
    assert t["mfu_spec"] is None  # spec-sheet peaks are for GPUs
    assert 0 < len(report["top_ops"]) <= 8 and any("mm" in op["op"] for op in report["top_ops"])
    phases = report["roofline"]
    assert {mm["m"] for mm in phases["training (B*T rows)"]} == {64}
    assert all(mm["intensity"] < 1 for mm in phases["decoding (1 row)"])  # one row: memory-bound
    assert set(report["variants"]) == {"bf16 autocast"} and report["variants"]["bf16 autocast"]["speedup"] > 0
    assert "MFU" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_profile_with_compile(tmp_path):
    report = run(_args(tmp_path, compile=True))
    assert report["variants"]["torch.compile"]["tokens_per_s"] > 0


def test_bad_settings(tmp_path):
    with pytest.raises(UserError, match="context window"):
        run(_args(tmp_path, seq_len=10_000))
    with pytest.raises(UserError, match="at least 1"):
        run(_args(tmp_path, steps=0))
