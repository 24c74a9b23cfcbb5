"""Text -> normalised vectors (N, dim): llmlab's BERT encoder (all-MiniLM-L6-v2 by default) or any llmlab decoder.

- An encoder (`llmlab.models.bert.Bert`) embeds as sentence-transformers does (Reimers & Gurevych 2019):
  [CLS] text [SEP] cut to the model's `embed_len`, mean over real tokens, L2-normalised; the numbers equal
  sentence-transformers' for all-MiniLM-L6-v2 (tests/rag/test_embeddings.py).
- A decoder (`llmlab.models.gpt.Transformer`, e.g. SmolLM2) embeds by mean pooling its final hidden states
  (after the last norm) over the text's tokens. Causal attention means right padding never changes a real
  token's state, so no mask is needed. The last block's output is caught with a forward hook and the
  vocabulary head is skipped (`logits_mask` all False): the model file is not touched.
Texts are sorted by token length before batching, so a batch pads to similar lengths (sentence-transformers
does the same), and run without gradients. Models loaded by name are kept in a small cache (`_CACHE`).
`embed_sharded` runs shards of a large corpus on the data stage's executors (`llmlab.data.pipeline`).
Named models load through `llmlab.models.pretrained` (aliases, folders, hub ids); fine-tuned checkpoints are
`llmlab.load`'s, a layer above: load them there and pass the result in.
"""

import os
from typing import Any

import torch
import torch.nn.functional as F

from llmlab.common.errors import UserError

DEFAULT_MODEL = "all-minilm-l6-v2"
_CACHE: dict[str, "Embedder"] = {}


class Embedder:
    """A model and its tokenizer, callable on a list of texts -> (N, dim) float32 on the CPU."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, name: str = "", max_len: int | None = None,
                 normalize: bool = True):
        if tokenizer is None:
            raise UserError(f"{name or 'model'}: has no tokenizer; an embedder needs one to read text")
        self.model, self.tokenizer, self.name, self.normalize = model.eval(), tokenizer, name, normalize
        self.is_encoder = hasattr(model, "encode") and hasattr(model, "pool")  # llmlab.models.bert.Bert
        config = model.config
        self.max_len = max_len or (getattr(config, "embed_len", None) or config.seq_len)
        self.dim = config.n_embd
        if self.is_encoder and self.max_len < 3:
            raise UserError(f"max_len={self.max_len}: need room for [CLS], [SEP] and at least one token")

    def token_ids(self, text: str) -> list[int]:
        if self.is_encoder:
            return self.tokenizer.add_special(self.tokenizer.encode(text, add_special_tokens=False)[:self.max_len - 2])
        ids = self.tokenizer.encode(text)[:self.max_len]
        return ids or [self.tokenizer.eos_id if getattr(self.tokenizer, "eos_id", None) is not None else 0]

    def _decoder_states(self, idx: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, T, C) of a decoder: the last block's output, then the final norm."""
        caught = []
        hook = self.model.blocks[-1].register_forward_hook(lambda mod, args, out: caught.append(out))
        try:
            self.model(idx, logits_mask=torch.zeros_like(idx, dtype=torch.bool))  # no vocabulary projection
        finally:
            hook.remove()
        return self.model.norm_f(caught[0])

    @torch.no_grad()
    def __call__(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        if batch_size < 1:
            raise UserError(f"batch_size={batch_size}: must be at least 1")
        device = next(self.model.parameters()).device
        ids = [self.token_ids(t) for t in texts]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # longest first: batches of similar length
        out = torch.empty(len(ids), self.dim)
        for b in range(0, len(order), batch_size):
            rows = order[b:b + batch_size]
            idx, mask = self.tokenizer.pad([ids[i] for i in rows], pad_id=self._pad_id())
            idx, mask = idx.to(device), mask.to(device)
            if self.is_encoder:
                hidden = self.model.encode(idx, mask)  # (B, T, C)
            else:
                hidden = self._decoder_states(idx)  # (B, T, C)
            m = mask[..., None].to(hidden.dtype)  # (B, T, 1)
            vectors = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, C): mean over real tokens
            vectors = F.normalize(vectors.float(), p=2, dim=1) if self.normalize else vectors.float()
            out[rows] = vectors.cpu()
        return out

    def _pad_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_id", None)
        return pad if pad is not None else 0


def load_embedder(name: str = DEFAULT_MODEL) -> Embedder:
    """An embedder for a model name (alias, folder, .gguf, hub id), loaded once per process."""
    from llmlab.models.pretrained import load_model

    if name not in _CACHE:
        model, tokenizer, where = load_model(name)
        _CACHE[name] = Embedder(model, tokenizer, name=name)
    return _CACHE[name]


def as_embedder(model: Any = DEFAULT_MODEL) -> Embedder:
    """An `Embedder` from a name, an Embedder, a loaded model (anything with .model and .tokenizer: what
    `llmlab.load` returns) or a (model, tokenizer) pair."""
    if isinstance(model, Embedder):
        return model
    if isinstance(model, str | os.PathLike):
        return load_embedder(str(model))
    if isinstance(model, tuple) and len(model) == 2:
        return Embedder(model[0], model[1])
    if hasattr(model, "model") and hasattr(model, "tokenizer"):
        return Embedder(model.model, model.tokenizer, name=str(getattr(model, "source", "")))
    raise UserError(f"embedder {type(model).__name__}: give a model name, a loaded model or (model, tokenizer)")


def embed(texts: list[str], model: Any = DEFAULT_MODEL, batch_size: int = 32) -> torch.Tensor:
    """Normalised embeddings (N, dim) of `texts`, equal to sentence-transformers' for all-MiniLM-L6-v2."""
    return as_embedder(model)(texts, batch_size)


def _embed_shard(task: tuple[str, list[str], int, int]) -> torch.Tensor:
    """One shard in a worker process: load the model by name (cached in that process), embed, return."""
    name, texts, batch_size, threads = task
    torch.set_num_threads(threads)
    return embed(texts, name, batch_size)


def embed_sharded(texts: list[str], model: str = DEFAULT_MODEL, shard_size: int = 2048, executor: str = "inprocess",
                  workers: int = 2, batch_size: int = 32, task_timeout: float = 3600.0) -> torch.Tensor:
    """Embeddings of a large corpus, shard by shard on `llmlab.data.pipeline.executors` (inprocess, local
    processes, dask); shards come back in order and are concatenated. Workers load the model by name."""
    from llmlab.data.pipeline.executors import make_executor

    if not isinstance(model, str):
        raise UserError("embed_sharded: workers load the model themselves; give its name or path, not a model")
    if shard_size < 1:
        raise UserError(f"shard_size={shard_size}: must be at least 1")
    shards = [texts[i:i + shard_size] for i in range(0, len(texts), shard_size)]
    if not shards:
        return torch.empty(0, as_embedder(model).dim)
    pool = make_executor(executor, workers)
    threads = 1 if executor != "inprocess" else torch.get_num_threads()  # one thread per worker process
    try:
        parts = pool.map(_embed_shard, [(model, s, batch_size, threads) for s in shards],
                         [f"shard-{i:05d}" for i in range(len(shards))], task_timeout=task_timeout)
    finally:
        pool.close()
    return torch.cat(parts)
