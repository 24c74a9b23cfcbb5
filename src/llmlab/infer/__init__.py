"""Inference: sampling, generation with a KV cache, batching, speculative decoding (token ids only), and
`Pretrained`, a loaded model with its tokenizer that turns text into ids and back."""

from llmlab.infer.generate import generate, generate_batch, stream

__all__ = ["generate", "generate_batch", "stream"]
