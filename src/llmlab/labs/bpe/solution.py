"""Lab: bpe, the reference solution: llmlab's own byte-level BPE functions (llmlab.tokenizer.bpe): pair counts,
merge, the textbook trainer, the reference encoder. (llmlab's Tokenizer adds a GPT-4 regex pre-split and
special tokens around these; the lab trains on the raw bytes.)"""

from llmlab.tokenizer.bpe import best_pair, encode_chunk, get_stats, merge, train_reference

__all__ = ["get_stats", "merge", "train", "encode", "decode"]


def train(text: str, vocab_size: int) -> list[tuple[int, int]]:
    return train_reference({text.encode("utf-8"): 1}, vocab_size - 256)


def encode(text: str, merges: list[tuple[int, int]]) -> list[int]:
    ranks = {pair: (rank, 256 + rank) for rank, pair in enumerate(merges)}
    return encode_chunk(text.encode("utf-8"), ranks)


def decode(ids: list[int], merges: list[tuple[int, int]]) -> str:
    vocab = {i: bytes([i]) for i in range(256)}
    for rank, (a, b) in enumerate(merges):
        vocab[256 + rank] = vocab[a] + vocab[b]
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


LLMLAB_CODE = [get_stats, merge, best_pair, train_reference, encode_chunk]  # `llmlab labs solution bpe`
