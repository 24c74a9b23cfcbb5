"""Lab: bpe, the checks. References are llmlab's own BPE functions (`llmlab.tokenizer.bpe`), which its tests
hold equal to tiktoken's and HF tokenizers' merges and ids. Texts include repeats, runs of one byte (where
merges overlap) and non-ASCII characters (several bytes each).
"""

from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call
from llmlab.tokenizer.bpe import encode_chunk, get_stats, merge, train_reference

CHECKS = CheckList()
TEXTS = ["aaabdaaabac", "the cat sat on the mat; the cat ate", "ééé naïve café, ça va ? 日本語 日本"]


def _merges(text: str, vocab_size: int) -> list[tuple[int, int]]:
    return train_reference({text.encode("utf-8"): 1}, vocab_size - 256)


@CHECKS.add("get_stats", "counts every adjacent pair")
def stats(ws: Workspace) -> None:
    for ids in ([1, 2, 3, 1, 2], [5, 5, 5, 5], [7], []):
        out = call(ws.get("get_stats"), list(ids))
        want = get_stats(ids)
        if dict(out) != want:
            if dict(out) == {p: 1 for p in want}:
                raise CheckFailed(f"for {ids} every pair counts 1: count each occurrence ({want})")
            raise CheckFailed(f"get_stats({ids}) = {dict(out)}, expected {want}")


@CHECKS.add("merge", "replaces the pair left to right, without overlaps; leaves other ids alone")
def merging(ws: Workspace) -> None:
    for ids, pair, idx in (([1, 2, 3, 1, 2], (1, 2), 4), ([5, 5, 5], (5, 5), 6), ([5, 5, 5, 5], (5, 5), 6),
                           ([1, 2], (2, 1), 9), ([2, 1, 2], (1, 2), 7)):
        out = call(ws.get("merge"), list(ids), pair, idx)
        want = merge(ids, pair, idx)
        if list(out) != want:
            hint = ": after a match, skip both ids of the pair" if len(list(out)) > len(want) else ""
            raise CheckFailed(f"merge({ids}, {pair}, {idx}) = {list(out)}, expected {want}{hint}")


@CHECKS.add("train", "the merges of llmlab's trainer: most frequent pair first, ties to the smallest pair")
def training(ws: Workspace) -> None:
    for text in TEXTS:
        for vocab_size in (258, 256 + 10):
            out = [tuple(p) for p in call(ws.get("train"), text, vocab_size)]
            want = _merges(text, vocab_size)
            if out == want:
                continue
            if len(out) != len(want):
                raise CheckFailed(f"{len(out)} merges for vocab_size {vocab_size} on {text!r}; expected {len(want)} "
                                  "(vocab_size - 256, fewer only when no pair is left)")
            first = next(i for i, (a, b) in enumerate(zip(out, want, strict=True)) if a != b)
            ids = list(text.encode("utf-8"))
            for i, pair in enumerate(want[:first]):
                ids = merge(ids, pair, 256 + i)
            counts = get_stats(ids)
            if counts.get(out[first], 0) == counts[want[first]]:
                raise CheckFailed(f"merge {first} on {text!r}: {out[first]} and {want[first]} are equally frequent; "
                                  "ties go to the smallest pair, so every machine trains the same merges")
            raise CheckFailed(f"merge {first} on {text!r} is {out[first]}, expected {want[first]}, the most frequent "
                              f"pair then ({counts[want[first]]} times): are new ids 256 + i, and merged into the ids?")


@CHECKS.add("encode", "applies the merges by rank (not by position), as llmlab's encoder does")
def encoding(ws: Workspace) -> None:
    merges = _merges(" ".join(TEXTS), 256 + 20)
    ranks = {pair: (rank, 256 + rank) for rank, pair in enumerate(merges)}
    for text in TEXTS + ["", "a", "cat ate the mat"]:
        out = call(ws.get("encode"), text, merges)
        want = encode_chunk(text.encode("utf-8"), ranks)
        if list(out) != want:
            raise CheckFailed(f"encode({text!r}) = {list(out)[:12]}..., expected {want[:12]}...: apply the merge of "
                              "lowest rank among the pairs present, then repeat")
    toy = [(2, 3), (1, 2), (1, 256)]  # bytes [1, 2, 3]: (2, 3) has rank 0 -> [1, 256] -> [258]
    out = call(ws.get("encode"), "\x01\x02\x03", toy)
    if list(out) != [258]:
        raise CheckFailed(f"with merges {toy}, bytes [1, 2, 3] encode to {list(out)}, expected [258]: merge (2, 3) "
                          "first, the lowest rank, though (1, 2) comes first in the text; then (1, 256)")


@CHECKS.add("decode", "decode(encode(text)) gives back the text, multi-byte characters too")
def decoding(ws: Workspace) -> None:
    merges = _merges(" ".join(TEXTS), 256 + 20)
    ranks = {pair: (rank, 256 + rank) for rank, pair in enumerate(merges)}
    for text in TEXTS + [""]:
        ids = encode_chunk(text.encode("utf-8"), ranks)
        out = call(ws.get("decode"), ids, merges)
        if out != text:
            raise CheckFailed(f"decode gave {out!r} for {text!r}: an id 256 + i is the bytes of merges[i]'s two ids "
                              "joined; join all the bytes, then decode UTF-8 once (a character may span two ids)")
    try:
        out = call(ws.get("decode"), [0xE6], [])  # the first byte of a 3-byte character alone
    except UnicodeDecodeError:
        out = "an error"
    if out != "\ufffd":
        raise CheckFailed(f"decode([0xE6]) = {out!r}: an incomplete character should become '\\ufffd' "
                          "(errors='replace'), not an error")
