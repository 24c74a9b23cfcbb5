"""Embeddings: all-MiniLM-L6-v2 equal to sentence-transformers (sorted batches change nothing), a decoder's
mean-pooled states equal transformers' last hidden state pooled the same way, shards equal one pass."""

import pytest
import torch
import torch.nn.functional as F

from llmlab.common.errors import UserError
from llmlab.models import Transformer, get_preset
from llmlab.rag.embeddings import Embedder, as_embedder, embed, embed_sharded

TEXTS = ["A man is eating food.", "", "Retrieval-augmented generation finds passages, then answers from them.",
         "word " * 400, "机器学习很有趣", "The new movie is awesome", "short"]


def test_minilm_equals_sentence_transformers(minilm):
    SentenceTransformer = pytest.importorskip("sentence_transformers").SentenceTransformer
    from llmlab.models.pretrained import find_source

    st = SentenceTransformer(str(find_source("all-minilm-l6-v2")), device="cpu")
    expected = st.encode(TEXTS, convert_to_tensor=True, batch_size=3).cpu()
    ours = embed(TEXTS, batch_size=3)
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=0)
    torch.testing.assert_close(embed(TEXTS[:1]), ours[:1], atol=2e-6, rtol=0)  # alone or batched: the same
    assert embed(TEXTS, minilm) is not None and as_embedder("all-minilm-l6-v2") is minilm  # cached by name


def test_decoder_mean_pooling_equals_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    from llmlab.loading import save_pretrained
    from llmlab.tokenizer import Tokenizer

    tok = Tokenizer.train(" ".join(TEXTS[:3]) * 20, 300)
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=300, seq_len=128,
                                   tie_embeddings=False)).eval()
    save_pretrained(model, tmp_path / "hf", tok)
    hf = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    texts = ["A man is eating food.", "Retrieval finds passages.", "ab"]
    ours = Embedder(model, tok)(texts, batch_size=2)
    for text, vector in zip(texts, ours, strict=True):
        ids = torch.tensor([tok.encode(text)])
        with torch.no_grad():
            hidden = hf(ids).last_hidden_state[0]  # (T, C), after the final norm
        torch.testing.assert_close(vector, F.normalize(hidden.mean(0), dim=0), atol=1e-5, rtol=0)


def test_sharded_equals_one_pass(tiny_encoder):
    texts = [f"passage number {i} about topic {i % 7}" for i in range(50)]
    one = embed(texts, tiny_encoder)
    torch.testing.assert_close(embed_sharded(texts, tiny_encoder, shard_size=16), one, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_sharded_on_worker_processes(tiny_encoder):
    texts = [f"passage number {i} about topic {i % 7}" for i in range(40)]
    got = embed_sharded(texts, tiny_encoder, shard_size=10, executor="local", workers=2, task_timeout=300)
    torch.testing.assert_close(got, embed(texts, tiny_encoder), atol=1e-5, rtol=0)


def test_bad_input(tiny_encoder):
    with pytest.raises(UserError, match="give a model name"):
        as_embedder(42)
    with pytest.raises(UserError, match="batch_size"):
        embed(["x"], tiny_encoder, batch_size=0)
    with pytest.raises(UserError, match="give its name"):
        embed_sharded(["x"], as_embedder(tiny_encoder))
