"""Corpus reading, the held-out split, shards and the window sampler."""

import json

import numpy as np
import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.data.loader import WindowSampler, read_manifest, sequential_windows
from llmlab.data.shards import _flatten, token_dtype
from llmlab.data.sources import default_corpus, read_documents, sample_documents, split_documents


def test_default_corpus_is_stdlib_and_pydoc_with_validation_held_out_by_file():
    docs = default_corpus()
    names = [n for n, _ in docs]
    assert any(n == "stdlib/textwrap.py" for n in names) and any(n.startswith("pydoc/") for n in names)
    assert not any("/test/" in n for n in names)
    train, val = split_documents(docs)
    assert set(n for n, _ in train).isdisjoint(n for n, _ in val)
    assert 0.02 < len(val) / len(docs) < 0.1
    assert split_documents(docs) == (train, val)  # stable: the same split every time


def test_reads_text_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.txt").write_text("plain text")
    (tmp_path / "b.jsonl").write_text('{"text": "row one"}\n\n{"text": "row two"}\n')
    pq.write_table(pa.table({"text": ["from parquet", None]}), tmp_path / "c.parquet")
    docs = read_documents([str(tmp_path)])
    assert sorted(t for _, t in docs) == ["from parquet", "plain text", "row one", "row two"]
    folder = tmp_path.name  # names are relative to what was given, so the split is the same anywhere
    assert sorted(n for n, _ in docs) == [f"{folder}/a.txt", f"{folder}/b.jsonl:1", f"{folder}/b.jsonl:3",
                                          f"{folder}/c.parquet#0"]


def test_bad_sources_give_clear_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_documents([str(tmp_path / "missing.txt")])
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(UserError, match="no text found"):
        read_documents([str(tmp_path / "empty.txt")])
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": broken\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: not valid JSON"):
        read_documents([str(tmp_path / "bad.jsonl")])
    (tmp_path / "nofield.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(UserError, match="nofield.jsonl:1: each row needs a string field 'text'"):
        read_documents([str(tmp_path / "nofield.jsonl")])
    with pytest.raises(UserError, match="single document"):
        split_documents([("only", "text")])


def test_token_dtype_follows_the_vocabulary():
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
    with pytest.raises(UserError, match="does not fit in uint32"):
        token_dtype(2**32 + 1)


def test_flatten_puts_eot_before_each_document():
    assert _flatten([[5, 6], [7]], eot=0).tolist() == [0, 5, 6, 0, 7]


def test_shards_round_trip_the_text(data_dir):
    from llmlab.tokenizer import Tokenizer

    manifest = read_manifest(data_dir)
    assert manifest["dtype"] == "uint16" and manifest["vocab_size"] == 320
    tok = Tokenizer.load(data_dir / manifest["tokenizer"])
    val = np.fromfile(data_dir / manifest["val"]["files"][0]["file"], dtype=np.uint16)
    assert len(val) == manifest["val"]["tokens"]
    text = tok.decode([t for t in val.tolist() if t != manifest["eot_id"]])
    assert text == (data_dir / "val.txt").read_text()


def test_sampler_is_reproducible_from_its_state(data_dir):
    a = WindowSampler(data_dir, "train", batch_size=3, seq_len=16, seed=7)
    a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))  # survives JSON, as in a checkpoint
    expected = [a.next_batch() for _ in range(3)]
    b = WindowSampler(data_dir, "train", batch_size=3, seq_len=16, seed=999)
    b.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(expected, [b.next_batch() for _ in range(3)], strict=True):
        assert x1.equal(x2) and y1.equal(y2)
    x, y = expected[0]
    assert x.shape == (3, 16) and x[:, 1:].equal(y[:, :-1])


def test_processes_read_their_own_rows_of_one_global_batch(data_dir):
    whole = WindowSampler(data_dir, "train", batch_size=6, seq_len=16, seed=7)
    parts = [WindowSampler(data_dir, "train", batch_size=6, seq_len=16, seed=7, rank=r, world_size=3)
             for r in range(3)]
    for _ in range(2):
        x, y = whole.next_batch()
        pieces = [p.next_batch() for p in parts]
        assert all(px.shape == (2, 16) for px, _ in pieces)
        assert torch.cat([px for px, _ in pieces]).equal(x) and torch.cat([py for _, py in pieces]).equal(y)
    assert all(p.state_dict() == whole.state_dict() for p in parts)  # one stream: resumable on any split
    with pytest.raises(ValueError, match="does not split into 4"):
        WindowSampler(data_dir, "train", batch_size=6, seq_len=16, rank=0, world_size=4)


def test_sequential_windows_predict_every_token_once(data_dir):
    manifest = read_manifest(data_dir)
    targets = [t[t != -100] for _, t in sequential_windows(data_dir, "val", batch_size=4, seq_len=16)]
    assert sum(len(t) for t in targets) == manifest["val"]["tokens"] - 1


def test_evaluation_subset_spans_the_whole_split(data_dir):
    rows = lambda batches: [(x[t != -100]).tolist() for xs, ts in batches for x, t in zip(xs, ts, strict=True)]
    everything = rows(sequential_windows(data_dir, "val", batch_size=1, seq_len=16))
    subset = rows(sequential_windows(data_dir, "val", batch_size=2, seq_len=16, max_tokens=64))
    assert len(subset) == 4 and len(everything) > 8
    assert subset[0] == everything[0] and subset[-1] == everything[-1]  # first and last windows of the split
    assert all(row in everything for row in subset)


def test_sample_documents_spreads_over_a_sorted_corpus():
    docs = [(f"doc{i:03d}", "x" * 10) for i in range(100)]
    sample = sample_documents(docs, 205)
    assert len(sample) == 21 and set(sample) <= set(docs)  # whole documents until the budget is passed
    assert sample == sample_documents(docs, 205) != sample_documents(docs, 205, seed=1)
    picked = sorted(int(name[3:]) for name, _ in sample)
    assert picked[-1] - picked[0] > 50 and picked != list(range(21))  # not the head of the sorted list
    assert sample_documents(docs, 10**6) != docs and sorted(sample_documents(docs, 10**6)) == docs
