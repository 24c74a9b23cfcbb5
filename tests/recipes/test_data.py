"""`llmlab data clean|dedup|mix|pipeline|inspect`, and `--pipeline` in `data prepare` and `speedrun`, run as a
user runs them (through the CLI's table; the rows are added here until cli.py lists them)."""

import json

import pytest

from llmlab import cli
from llmlab.recipes import data

ROWS = {("data", w): ("llmlab.recipes.data", f"{w.capitalize()}Args", w, w)
        for w in ("clean", "dedup", "mix", "pipeline", "inspect")}


@pytest.fixture(autouse=True)
def commands(monkeypatch):
    for words, row in ROWS.items():
        monkeypatch.setitem(cli.COMMANDS, words, row)


@pytest.fixture(scope="module")
def noisy_file(tmp_path_factory):
    from tests.data.pipeline.conftest import load_generator

    path = tmp_path_factory.mktemp("noisy") / "web.jsonl"
    load_generator().write(path, 0.4, seed=1)
    return path


@pytest.fixture
def pages(tmp_path):
    """Twelve pages: four copies of one, three near-copies of another, five distinct ones."""
    base = " ".join(f"word{i}" for i in range(200))
    near = " ".join(f"term{i}" for i in range(300))
    texts = [base] * 4 + [near, near.replace("term7 ", "x "), near.replace("term250 ", "y ")]
    texts += [" ".join(f"unique{j}_{i}" for i in range(100)) for j in range(5)]
    path = tmp_path / "pages.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def test_dedup_interface(pages, tmp_path):
    out = tmp_path / "dedup"
    assert cli.main(["data", "dedup", "--data", str(pages), "--out", str(out), "--threshold", "0.8"]) == 0
    rows = [json.loads(line) for f in sorted(out.glob("*.jsonl")) for line in f.open()]
    assert [r["id"] for r in rows] == ["p0", "p4", "p7", "p8", "p9", "p10", "p11"]
    assert all(set(r) == {"id", "text", "source"} for r in rows)
    report = json.loads((out / "report.json").read_text())
    assert report["documents_in"] == 12 and report["documents_out"] == 7
    exact, minhash = report["stages"][1], report["stages"][2]
    assert exact["info"]["cluster sizes"] == {"4": 1} and minhash["info"]["cluster sizes"] == {"3": 1}
    assert minhash["info"]["largest clusters"] == [["p4", "p5", "p6"]]


def test_clean_on_the_noisy_corpus_with_workers(noisy_file, tmp_path):
    out = tmp_path / "clean"
    code = cli.main(["data", "clean", "--data", str(noisy_file), "--out", str(out), "--languages", "en",
                     "--executor", "local", "--workers", "2", "--shard-mb", "0.2"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["read", "normalize", "language", "gopher_quality",
                                                     "gopher_repetition", "c4", "pii"]
    assert report["executor"] == "local" and report["shards"] > 1 and report["documents_out"] > 0
    assert "report" in (out / "report.md").read_text()


def test_mix_by_named_sources(tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": f"a text {i}"}) + "\n" for i in range(10)))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"text": f"b text {i}"}) + "\n" for i in range(10)))
    out = tmp_path / "mix"
    args = ["data", "mix", "--data", f"web={tmp_path / 'a.jsonl'}", f"code={tmp_path / 'b.jsonl'}", "--out", str(out),
            "--weights", "code=3", "web=1"]
    assert cli.main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["sources_out"]["code"]["documents"] == 30 and report["sources_out"]["web"]["documents"] == 10
    tokens = report["stages"][1]["info"]["tokens out per source"]
    assert tokens["code"] == 3 * sum(len(f"b text {i}") for i in range(10))
    assert cli.main(args[:-3] + ["--weights", "code:3"]) == 2


def test_pipeline_file_with_evaluation_tasks(tmp_path, capsys):
    from llmlab.eval.builtin import builtin_rows

    question = builtin_rows("tasks-qa")[0]["question"]
    rows = [{"text": f"Homework: {question} Please help me with it today, it is due."},
            {"text": "Nothing to see here, just an ordinary page of text about gardens."}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "p.toml").write_text('[[stages]]\nname = "decontaminate"\ntasks = ["tasks-qa"]\nngram = 8\n')
    out = tmp_path / "out"
    assert cli.main(["data", "pipeline", "--pipeline", str(tmp_path / "p.toml"), "--data", str(tmp_path / "in.jsonl"),
                     "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["stages"][1]["dropped"] == {"shares a 8-gram with tasks-qa": 1}
    (tmp_path / "bad.toml").write_text('[[stages]]\nname = "dedupe"\n')
    assert cli.main(["data", "pipeline", "--pipeline", str(tmp_path / "bad.toml"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown stage 'dedupe'" in err and "\n" not in err


def test_inspect_shows_loss_masks(data_dir, capsys):
    shown = data.inspect(data.InspectArgs(data="tasks", tokenizer=str(data_dir / "tokenizer.llmlab.json"), rows=2,
                                          color="never"))
    out = capsys.readouterr().out
    assert len(shown) == 2 and out.count("--- row") == 2
    for row in shown:
        trained = "".join(p for p, t in zip(row["pieces"], row["trained"], strict=True) if t)
        assert 0 < sum(row["trained"]) < len(row["ids"]) and "<|im_end|>" in trained  # the answer and its end
    shards = data.inspect(data.InspectArgs(data=str(data_dir), rows=1, max_tokens=32, color="always"))
    assert all(shards[0]["trained"]) and "\033[30;42m" in capsys.readouterr().out


def test_prepare_takes_a_pipeline(corpus_dir, tmp_path):
    from llmlab.recipes.prepare import PrepareArgs, run

    (tmp_path / "p.toml").write_text('[[stages]]\nname = "normalize"\n[[stages]]\nname = "exact_dedup"\n')
    manifest = run(PrepareArgs(data=[str(corpus_dir)], out=str(tmp_path / "data"), vocab_size=300,
                               val_fraction=0.2, pipeline=str(tmp_path / "p.toml")))
    report = json.loads((tmp_path / "data" / "pipeline" / "out" / "report.json").read_text())
    assert report["documents_out"] == manifest["train"]["documents"] > 0


def test_speedrun_takes_a_pipeline(corpus_dir, tmp_path):
    from llmlab.recipes.speedrun import SpeedrunArgs, run

    (tmp_path / "p.toml").write_text('[[stages]]\nname = "pii"\n[[stages]]\nname = "minhash_dedup"\n')
    out = tmp_path / "run"
    report = run(SpeedrunArgs(out=str(out), data=[str(corpus_dir)], pipeline=str(tmp_path / "p.toml"),
                              vocab_size=300, seq_len=64, max_steps=4, samples=1, sample_tokens=8, progress=False))
    assert report["steps"] == 4 and report["val_bpb"] > 0
    assert (out / "pipeline" / "out" / "report.md").exists()


def test_speedrun_with_the_code_preset_and_muon_resumes_only_with_muon(corpus_dir, tmp_path):
    from llmlab.common.errors import UserError
    from llmlab.recipes.speedrun import SpeedrunArgs, run

    args = dict(out=str(tmp_path / "run"), data=[str(corpus_dir)], pipeline="code", optimizer="muon",
                vocab_size=300, seq_len=64, max_steps=4, samples=1, sample_tokens=8, progress=False)
    report = run(SpeedrunArgs(**args))
    assert report["steps"] == 4 and report["val_bpb"] > 0
    assert "exact_dedup" in (tmp_path / "run" / "pipeline" / "out" / "report.md").read_text()
    with pytest.raises(UserError, match="optimizer: 'muon' -> 'adamw'"):
        run(SpeedrunArgs(**{**args, "optimizer": "adamw", "max_steps": 6, "resume": True}))


def test_speedrun_records_its_precision_and_resumes_in_it(corpus_dir, tmp_path):
    from llmlab.common.errors import UserError
    from llmlab.recipes.speedrun import SpeedrunArgs, run

    args = dict(out=str(tmp_path / "run"), data=[str(corpus_dir)], precision="bf16", vocab_size=300, seq_len=64,
                max_steps=4, samples=1, sample_tokens=8, progress=False)
    report = run(SpeedrunArgs(**args))
    assert report["precision"] == "bf16" and report["config"]["speedrun"]["precision"] == "bf16"
    assert "(bf16 matmuls)" in (tmp_path / "run" / "report.md").read_text()
    with pytest.raises(UserError, match="precision: 'bf16' -> 'fp32'"):
        run(SpeedrunArgs(**{**args, "precision": "fp32", "max_steps": 6, "resume": True}))
    # auto on resume keeps the interrupted run's precision, whatever this machine would choose now
    resumed = run(SpeedrunArgs(**{**args, "precision": "auto", "max_steps": 6, "resume": True}))
    assert resumed["steps"] == 6 and resumed["precision"] == "bf16"
