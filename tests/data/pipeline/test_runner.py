"""The runner end to end on the planted-noise corpus: what each stage removed, checked against the truth."""

import json
from collections import Counter

from llmlab.data.pipeline import (
    C4,
    PII,
    ExactDedup,
    GopherQuality,
    GopherRepetition,
    Language,
    MinHashDedup,
    Normalize,
    Pipeline,
    process_documents,
    run_pipeline,
)

JUNK = ("lang_fr", "lang_de", "lang_es", "lorem", "spam", "code", "short", "exact_dup")


def full() -> Pipeline:
    return Pipeline([Normalize(), Language(), GopherQuality(), GopherRepetition(), C4(), PII(), ExactDedup(),
                     MinHashDedup(threshold=0.8)], shard_mb=0.2)


def test_planted_noise_is_removed_and_reported(noisy_file, noisy_rows, tmp_path):
    report = run_pipeline(full(), [str(noisy_file)], tmp_path)
    rows = [json.loads(line) for f in sorted(tmp_path.glob("shard_*.jsonl")) for line in f.open()]
    kinds_in, kinds_out = Counter(r["kind"] for r in noisy_rows), Counter(r["kind"] for r in rows)
    assert all(kinds_out[k] == 0 for k in JUNK), kinds_out
    assert kinds_out["clean"] >= 0.98 * kinds_in["clean"]
    assert kinds_out["near_dup"] < 0.5 * kinds_in["near_dup"]
    assert kinds_out["mojibake"] == kinds_in["mojibake"] and not any("â€" in r["text"] for r in rows)
    assert not any("@example.org" in r["text"] for r in rows)
    assert {"id", "text", "source"} <= set(rows[0]) and rows[0]["source"] == "web"
    stages = report["stages"]
    assert [s["name"] for s in stages] == ["read", "normalize", "language", "gopher_quality", "gopher_repetition",
                                           "c4", "pii", "exact_dedup", "minhash_dedup"]
    for a, b in zip(stages, stages[1:], strict=False):  # each stage gets what the one before let through
        assert a["docs_out"] == b["docs_in"] and a["bytes_out"] == b["bytes_in"]
        assert b["docs_in"] - b["docs_out"] == sum(b["dropped"].values())
    assert report["documents_out"] == len(rows) and report["documents_in"] == len(noisy_rows)
    assert stages[7]["dropped"]["exact duplicate"] >= kinds_in["exact_dup"] - kinds_out["exact_dup"]
    assert stages[8]["info"]["clusters"] > 0 and stages[8]["info"]["bands"] == 9
    assert stages[6]["counters"]["emails"] == sum("@example.org" in r["text"] for r in noisy_rows)  # + copies
    md = (tmp_path / "report.md").read_text()
    assert "| 8 | minhash_dedup |" in md and "Examples, near duplicate" in md
    assert (tmp_path / "stages.png").stat().st_size > 1000 and (tmp_path / "clusters.png").exists()
    assert not (tmp_path / "_work").exists()


def test_output_does_not_depend_on_shard_size(noisy_file, tmp_path):
    p_small, p_big = full(), full()
    p_big.shard_mb = 100
    run_pipeline(p_small, [str(noisy_file)], tmp_path / "small")
    run_pipeline(p_big, [str(noisy_file)], tmp_path / "big")

    def docs(d):
        return [line for f in sorted(d.glob("shard_*.jsonl")) for line in f.read_text().splitlines()]

    assert docs(tmp_path / "small") == docs(tmp_path / "big")


def test_process_documents_keeps_names(tmp_path):
    docs = [(f"corpus/{i}.txt", "Same text in every file, with enough words.") for i in range(3)]
    docs.append(("corpus/other.txt", "A different document altogether."))
    out, report = process_documents(docs, Pipeline([ExactDedup()]), tmp_path)
    assert out == [docs[0], docs[3]] and report["stages"][1]["dropped"] == {"exact duplicate": 2}


def test_rerun_into_a_finished_folder_replaces_it(noisy_file, tmp_path):
    run_pipeline(Pipeline([PII()], shard_mb=0.2), [str(noisy_file)], tmp_path)
    n = len(list(tmp_path.glob("shard_*")))
    run_pipeline(Pipeline([PII()], shard_mb=100), [str(noisy_file)], tmp_path)
    assert n > 1 and len(list(tmp_path.glob("shard_*"))) == 1
