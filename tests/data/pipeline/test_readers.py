"""Readers: every format gives the same documents as reading the rows by hand; bad input is counted or refused."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from llmlab.common.errors import UserError
from llmlab.data.pipeline.readers import plan_shards, read_jsonl_docs, read_shard, write_docs


def read_all(inputs, shard_bytes=64_000_000, on_bad_bytes="skip"):
    docs, stats = [], []
    for shard in plan_shards([str(i) for i in inputs], shard_bytes):
        d, s = read_shard(shard, on_bad_bytes)
        docs += d
        stats.append(s)
    return docs, stats


def test_jsonl_compressed_and_split_give_the_same_documents(tmp_path, noisy_rows):
    lines = "".join(json.dumps(r) + "\n" for r in noisy_rows)
    (tmp_path / "web.jsonl").write_text(lines, encoding="utf-8")
    (tmp_path / "web2.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    (tmp_path / "web3.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    whole, _ = read_all([tmp_path / "web.jsonl"])
    assert [d["text"] for d in whole] == [r["text"] for r in noisy_rows]
    assert [d["id"] for d in whole] == [r["id"] for r in noisy_rows] and whole[0]["source"] == "web"
    assert whole[0]["url"] == noisy_rows[0]["url"]  # metadata kept
    pieces = plan_shards([str(tmp_path / "web.jsonl")], shard_bytes=50_000)
    assert len(pieces) > 5
    split, _ = read_all([tmp_path / "web.jsonl"], shard_bytes=50_000)  # cut at byte offsets
    assert split == whole
    for name in ("web2.jsonl.gz", "web3.jsonl.zst"):
        other, _ = read_all([tmp_path / name])
        assert [d["text"] for d in other] == [r["text"] for r in noisy_rows]


def test_rows_without_id_are_named_by_line_even_when_split(tmp_path):
    rows = [{"text": f"document number {i} " * 20} for i in range(200)]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    docs, _ = read_all([path], shard_bytes=3000)
    assert [d["id"] for d in docs] == [f"rows.jsonl:{i + 1}" for i in range(200)]


def test_parquet_with_fineweb_schema(tmp_path, noisy_rows):
    rows = noisy_rows[:50]
    table = pa.table({"text": [r["text"] for r in rows], "id": [r["id"] for r in rows],
                      "url": [r["url"] for r in rows], "date": [r["date"] for r in rows],
                      "language": ["en"] * 50, "language_score": [0.9] * 50, "dump": ["CC-MAIN"] * 50})
    pq.write_table(table, tmp_path / "fw.parquet")
    docs, _ = read_all([tmp_path / "fw.parquet"])
    assert [(d["id"], d["text"], d["url"], d["language_score"]) for d in docs] == \
        [(r["id"], r["text"], r["url"], 0.9) for r in rows]
    assert "dump" not in docs[0]


def test_parquet_without_text_column_is_a_one_line_error(tmp_path):
    pq.write_table(pa.table({"content": ["a"]}), tmp_path / "bad.parquet")
    with pytest.raises(UserError, match="no 'text' column"):
        plan_shards([str(tmp_path / "bad.parquet")])


def test_undecodable_bytes_skipped_replaced_or_refused(tmp_path):
    (tmp_path / "ok.txt").write_text("fine text here", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 latin-1 text")
    (tmp_path / "rows.jsonl").write_bytes(b'{"text": "good row"}\n{"text": "bad \xff row"}\nnot json\n{"x": 1}\n')
    docs, stats = read_all([tmp_path])
    assert sorted(d["text"] for d in docs) == ["fine text here", "good row"]
    dropped = stats[0].dropped
    assert dropped == {"undecodable bytes": 2, "not valid JSON": 1, "no string 'text' field": 1}
    docs, stats = read_all([tmp_path], on_bad_bytes="replace")
    assert "caf\ufffd latin-1 text" in [d["text"] for d in docs]
    assert stats[0].counters["documents with bytes replaced"] == 2
    with pytest.raises(UserError, match="undecodable bytes"):
        read_all([tmp_path], on_bad_bytes="error")


def test_folders_named_sources_and_binary_files(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "a.py").write_text("print('hi')\n", encoding="utf-8")
    (tmp_path / "code" / "b.bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / "code" / ".hidden").write_text("secret", encoding="utf-8")
    docs, stats = read_all([f"py={tmp_path / 'code'}"])
    assert [(d["id"], d["source"]) for d in docs] == [("code/a.py", "py")]
    assert stats[0].dropped == {"binary file": 1}
    with pytest.raises(UserError, match="no such file"):
        plan_shards([str(tmp_path / "missing")])


def test_hf_datasets_streamed(tmp_path):
    folder = tmp_path / "local_ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(5)))
    docs, _ = read_all([f"hf:{folder}@train"])
    assert [d["text"] for d in docs] == [f"row {i}" for i in range(5)] and docs[0]["source"] == "local_ds"


def test_written_shards_read_back(tmp_path):
    docs = [{"id": "1", "text": "é\n", "source": "s", "extra": 2}, {"id": "2", "text": "b", "source": "t"}]
    write_docs(docs, tmp_path / "x.jsonl")
    assert read_jsonl_docs(tmp_path / "x.jsonl") == docs
    write_docs(docs, tmp_path / "shard_0.parquet")
    back, _ = read_all([tmp_path / "shard_0.parquet"])
    assert [(d["id"], d["text"], d["source"]) for d in back] == [("1", "é\n", "s"), ("2", "b", "t")]
