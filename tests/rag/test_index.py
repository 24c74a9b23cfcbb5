"""The index folder: build, search in every mode, save and reopen (JSON, safetensors, SQLite; nothing
pickled), add and delete in place, and the same answers as its parts computed directly."""

import json
import sqlite3

import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.rag.bm25 import tokenize
from llmlab.rag.documents import Document
from llmlab.rag.hybrid import reciprocal_rank_fusion
from llmlab.rag.index import Index

DOCS = [Document("cities.txt", "Paris is the capital of France. Berlin is the capital of Germany."),
        Document("animals.md", "# Cats\n\nCats purr and sleep most of the day.\n\n# Dogs\n\nDogs bark at night."),
        Document("code.py", "def add(a, b):\n    return a + b\n"),
        Document("space.txt", "The Moon orbits the Earth. Mars is the fourth planet from the Sun.")]


@pytest.fixture
def built(tiny_encoder, tmp_path):
    index = Index(tiny_encoder, chunk_tokens=16, overlap=4)
    index.add_documents(DOCS)
    index.save(tmp_path / "index")
    return Index.open(tmp_path / "index"), tmp_path / "index"


def test_search_modes_match_their_parts(built):
    index, _ = built
    question = "capital of France"
    dense = index.search(question, k=3, mode="dense")
    assert [set(h) for h in dense] == [{"source", "text", "score", "id", "start", "end"}] * 3
    scores = index.embed([question]) @ index.embed([h["text"] for h in dense]).T
    torch.testing.assert_close(torch.tensor([h["score"] for h in dense]), scores[0], atol=1e-5, rtol=0)
    lexical = index.search(question, k=3, mode="bm25")
    assert lexical[0]["source"] == "cities.txt"
    assert lexical[0]["score"] == pytest.approx(float(index.bm25.scores(tokenize(question)).max()))
    deep_dense = [h["id"] for h in index.search(question, k=20, mode="dense")]
    deep_bm25 = [h["id"] for h in index.search(question, k=20, mode="bm25")]
    expected = reciprocal_rank_fusion([deep_dense, deep_bm25], limit=3)
    assert [(h["id"], h["score"]) for h in index.search(question, k=3, mode="hybrid")] == \
        [(i, pytest.approx(s)) for i, s in expected]


def test_chunks_keep_sources_and_offsets(built):
    index, _ = built
    texts = {d.source: d.text for d in DOCS}
    rows = index.db.execute("SELECT source, start, end, text FROM chunks").fetchall()
    assert {r[0] for r in rows} == set(texts) and len(rows) == len(index)
    for source, start, end, text in rows:
        assert texts[source][start:end] == text


def test_folder_is_json_safetensors_and_sqlite(built):
    index, path = built
    assert sorted(p.name for p in path.iterdir()) == ["bm25.json", "bm25.safetensors", "chunks.sqlite",
                                                      "index.json", "vectors.safetensors"]
    meta = json.loads((path / "index.json").read_text())
    assert meta["format"] == "llmlab-rag-index" and meta["count"] == len(index)
    assert sqlite3.connect(path / "chunks.sqlite").execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == len(index)


def test_add_and_delete_in_place(built, tmp_path):
    index, path = built
    before = len(index)
    assert index.delete(source="cities.txt") > 0
    assert all(h["source"] != "cities.txt" for h in index.search("capital of France", k=10, mode="bm25"))
    assert Index.open(path).search("capital of France", k=1, mode="bm25")[0]["source"] == "cities.txt"  # unsaved
    index.add_documents([Document("new.txt", "Lisbon is the capital of Portugal.")])
    index.save(path)
    again = Index.open(path)
    assert again.search("capital of Portugal", k=1, mode="bm25")[0]["source"] == "new.txt"
    assert "cities.txt" not in again.sources() and len(again) < before + 2
    ids = [h["id"] for h in again.search("Portugal", k=1, mode="bm25")]
    assert again.delete(ids=ids) == 1 and again.search("Portugal", k=3, mode="bm25") == []


def test_ivf_int8_index_reopens(tiny_encoder, tmp_path):
    index = Index(tiny_encoder, kind="ivf", int8=True, nlist=2, nprobe=2, chunk_tokens=16, overlap=0)
    index.add_documents(DOCS)
    index.save(tmp_path / "ivf")
    again = Index.open(tmp_path / "ivf")
    assert again.vectors.kind == "ivf" and again.vectors.pages.dtype == torch.int8
    assert [h["id"] for h in again.search("Mars planet", k=3)] == [h["id"] for h in index.search("Mars planet", k=3)]


def test_minilm_finds_the_right_chunk(minilm, tmp_path):
    index = Index(minilm, chunk_tokens=32, overlap=0)
    index.add_documents(DOCS)
    assert index.search("Which planet comes fourth?", k=1)[0]["source"] == "space.txt"
    assert index.search("What noise does a dog make?", k=1, mode="hybrid")[0]["source"] == "animals.md"


def test_bad_input_is_a_one_line_error(built, tmp_path):
    index, path = built
    with pytest.raises(UserError, match="unknown"):
        index.search("x", mode="semantic")
    with pytest.raises(UserError, match="at least 1"):
        index.search("x", k=0)
    with pytest.raises(UserError, match="not an index folder"):
        Index.open(tmp_path / "nowhere")
    (path / "index.json").write_text("{oops")
    with pytest.raises(UserError, match="corrupt"):
        Index.open(path)
