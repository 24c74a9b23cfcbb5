"""RAG: numbered sources under a token budget, the chat template, and generation through the loaded model's
own `generate` (the answer equals generating from the same prompt ids directly)."""

import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.infer.pretrained import Pretrained
from llmlab.models import Transformer, get_preset
from llmlab.rag.documents import Document
from llmlab.rag.index import Index
from llmlab.rag.rag import answer, answer_stream, build_messages, closed_book_messages, format_sources, prompt_ids
from llmlab.tokenizer import Tokenizer

HITS = [{"source": f"doc{i}.txt", "text": f"fact number {i} " * 10, "score": 1.0 - i / 10, "id": i, "start": 0,
         "end": 10} for i in range(5)]


@pytest.fixture(scope="module")
def generator():
    text = " ".join(h["text"] for h in HITS) + " Sources Question Answer capital France Paris"
    tok = Tokenizer.train(text * 5, 300, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=300, seq_len=512)).eval()
    return Pretrained(model, tok, "tiny")


def test_sources_numbered_under_the_budget(generator):
    tok = generator.tokenizer
    one = len(tok.encode(f"[1] (doc0.txt)\n{HITS[0]['text']}"))
    messages, used = build_messages("what?", HITS, tok, context_tokens=int(2.5 * one))
    assert [u["n"] for u in used] == [1, 2] and [u["source"] for u in used] == ["doc0.txt", "doc1.txt"]
    assert "[1] (doc0.txt)" in messages[1]["content"] and "[3]" not in messages[1]["content"]
    assert messages[1]["content"].endswith("Question: what?")
    _, used = build_messages("what?", HITS, tok, context_tokens=5)  # the best source is cut, never dropped
    assert len(used) == 1
    assert format_sources(used) == "[1] doc0.txt (characters 0-10)"
    with pytest.raises(UserError, match="context_tokens"):
        build_messages("what?", HITS, tok, context_tokens=0)


def test_answer_is_the_models_own_generation(generator, tiny_encoder):
    index = Index(tiny_encoder, chunk_tokens=16, overlap=0)
    index.add_documents([Document("france.txt", "Paris is the capital of France."),
                         Document("other.txt", "Rivers flow to the sea.")])
    result = answer(generator, index, "capital of France?", k=2, max_new_tokens=12)
    assert [s["n"] for s in result.sources] == [1, 2] and len(result.hits) == 2
    messages, _ = build_messages("capital of France?", result.hits, generator.tokenizer)
    ids = prompt_ids(generator, messages)
    assert ids == generator.chat_ids(messages)  # the chat template renders the prompt
    assert result.text == generator.generate(ids, 12, temperature=0.0, text=True).strip()
    pieces, streamed = answer_stream(generator, index, "capital of France?", k=2, max_new_tokens=12)
    assert "".join(pieces).strip() == result.text == streamed.text
    closed = answer(generator, None, "capital of France?", max_new_tokens=4)
    assert closed.sources == [] and closed.hits == []
    assert prompt_ids(generator, closed_book_messages("q")) == generator.chat_ids(closed_book_messages("q"))
