"""Lab: bpe. Fill in the bodies below, then run `llmlab labs check bpe` (or the notebook).

Byte-level BPE: text becomes its UTF-8 bytes (ids 0..255); training repeatedly replaces the most frequent
adjacent pair of ids by a new id (256, 257, ...). `merges[i]` is the pair that id 256 + i stands for.
"""


def get_stats(ids: list[int]) -> dict[tuple[int, int], int]:
    """How often each adjacent pair occurs: [1, 2, 3, 1, 2] -> {(1, 2): 2, (2, 3): 1, (3, 1): 1}."""
    raise NotImplementedError("TODO: count zip(ids, ids[1:])")


def merge(ids: list[int], pair: tuple[int, int], idx: int) -> list[int]:
    """Replace each occurrence of `pair`, left to right and without overlaps, by `idx`:
    [1, 2, 3, 1, 2], (1, 2), 4 -> [4, 3, 4]; [5, 5, 5], (5, 5), 6 -> [6, 5]."""
    raise NotImplementedError("TODO: walk the list; on a match append idx and skip two")


def train(text: str, vocab_size: int) -> list[tuple[int, int]]:
    """The vocab_size - 256 merges of `text`'s bytes, in order. Each step merges the most frequent pair;
    equally frequent pairs go to the smallest one, (a, b) < (c, d), so every machine gets the same merges.
    Stops early when no pair is left."""
    raise NotImplementedError("TODO: ids = list(text.encode()); repeat: stats, best pair, merge into 256 + i")


def encode(text: str, merges: list[tuple[int, int]]) -> list[int]:
    """text -> ids: start from its bytes and apply the merges in training order (the lowest rank first)
    while any applies."""
    raise NotImplementedError("TODO: find the present pair of lowest rank, merge it, repeat")


def decode(ids: list[int], merges: list[tuple[int, int]]) -> str:
    """ids -> text: each id's bytes (256 + i is the bytes of merges[i]'s two ids, joined), decoded as UTF-8
    (errors="replace", since an id sequence may cut a character in two)."""
    raise NotImplementedError("TODO: a table id -> bytes, built in merge order")
