"""Pipeline files: TOML and JSON build the same stages; unknown stages, options and bad values are one line."""

import json

import pytest

from llmlab.common.errors import UserError
from llmlab.data.pipeline.config import STAGES, load_pipeline, pipeline_from_dict
from llmlab.data.pipeline.dedup import MinHashDedup
from llmlab.data.pipeline.normalize import Normalize

TOML = """
shard_mb = 8
[[stages]]
name = "normalize"
unicode = "NFKC"
[[stages]]
name = "regex"
rules = [{pattern = "^Menu$", replace = ""}]
[[stages]]
name = "minhash_dedup"
threshold = 0.7
"""


def test_toml_and_json_build_the_same_pipeline(tmp_path):
    (tmp_path / "p.toml").write_text(TOML)
    p = load_pipeline(tmp_path / "p.toml")
    assert p.shard_mb == 8 and isinstance(p.stages[0], Normalize) and p.stages[0].unicode == "NFKC"
    assert isinstance(p.stages[2], MinHashDedup) and p.stages[2].threshold == 0.7
    (tmp_path / "p.json").write_text(json.dumps(p.to_dict()))
    assert load_pipeline(tmp_path / "p.json").to_dict() == p.to_dict()


@pytest.mark.parametrize("d,message", [
    ({"stages": [{"name": "gopher"}]}, "unknown stage 'gopher'; stages: normalize"),
    ({"stages": [{"name": "c4", "min_sentence": 3}]}, "stage 'c4' has no option 'min_sentence'"),
    ({"stages": [{"name": "minhash_dedup", "threshold": "high"}]}, "option 'threshold': 'high' should be"),
    ({"stages": [{"name": "minhash_dedup", "threshold": 2.0}]}, "stage 1 (minhash_dedup): threshold 2.0"),
    ({"stages": [], "workers": 3}, "unknown setting(s) workers"),
    ({"stages": []}, "no stages"),
    ({"stage": [{"name": "pii"}]}, "unknown setting(s) stage"),
    ({"stages": [{"name": "decontaminate", "tasks": ["math"]}]}, "evaluation tasks are read by"),
])
def test_mistakes_are_one_line_errors(d, message):
    with pytest.raises(UserError) as e:
        pipeline_from_dict(d, "p.toml")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unparsable_and_missing_files(tmp_path):
    (tmp_path / "bad.toml").write_text("[[stages]\nname=")
    with pytest.raises(UserError, match="cannot parse"):
        load_pipeline(tmp_path / "bad.toml")
    with pytest.raises(UserError, match="no such pipeline file"):
        load_pipeline(tmp_path / "none.toml")


def test_every_stage_builds_from_its_name():
    for name, cls in STAGES.items():
        options = {"mix": {"weights": {"a": 1.0}}, "decontaminate": {"texts": {"x": ["t"]}}}.get(name, {})
        p = pipeline_from_dict({"stages": [{"name": name, **options}]})
        assert type(p.stages[0]) is cls


def test_shipped_presets_load_by_name_and_a_file_of_that_name_wins(tmp_path, monkeypatch):
    code = load_pipeline("code")
    assert [s.name for s in code.stages] == ["normalize", "pii", "exact_dedup", "minhash_dedup"]
    assert "language" in [s.name for s in load_pipeline("web").stages]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "code").write_text('{"stages": [{"name": "pii"}]}')
    assert [s.name for s in load_pipeline("code").stages] == ["pii"]
    with pytest.raises(UserError, match="or a preset: code, web"):
        load_pipeline("cod")
