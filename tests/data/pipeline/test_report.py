"""The report: markdown tables and examples from the counts, and plots written as PNG files."""

from llmlab.data.pipeline.report import render_markdown, write_report
from llmlab.data.pipeline.stage import StageStats


def report() -> dict:
    read, dedup = StageStats("read", docs_in=3, docs_out=3, bytes_in=30, bytes_out=30), StageStats("exact_dedup")
    dedup.docs_in, dedup.docs_out, dedup.bytes_in, dedup.bytes_out = 3, 2, 30, 20
    dedup.drop({"id": "b", "text": "same | text"}, "exact duplicate", "of a")
    dedup.info["cluster sizes"] = {"2": 1}
    return {"title": "dedup", "documents_in": 3, "bytes_in": 30, "documents_out": 2, "bytes_out": 20, "wall_s": 0.5,
            "executor": "inprocess", "workers": 1, "shards": 1, "sources_out": {"web": {"documents": 2, "bytes": 20}},
            "stages": [read.to_dict(), dedup.to_dict()], "pipeline": {"stages": [{"name": "exact_dedup"}]}}


def test_markdown_lists_stages_reasons_and_examples():
    md = render_markdown(report())
    assert "| 1 | exact_dedup | 3 | 2 | 1 | 0.00 | 0.00 | 0.0 |" in md
    assert "| exact duplicate | 1 |" in md and "- `b` (of a): same / text" in md  # pipes would break the table
    assert "| web | 2 | 0.00 |" in md and "![duplicate cluster sizes](clusters.png)" in md


def test_files_are_written(tmp_path):
    write_report(report(), tmp_path)
    assert (tmp_path / "report.json").exists() and (tmp_path / "report.md").exists()
    assert (tmp_path / "stages.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "clusters.png").exists()
