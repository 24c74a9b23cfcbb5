"""Inference: sampling, generation with a KV cache, batching, speculative decoding. Token ids only."""

from llmlab.infer.generate import generate, generate_batch, stream

__all__ = ["generate", "generate_batch", "stream"]
