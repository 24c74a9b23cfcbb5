"""Lab: bpe, planted bugs: learner-style correct answers (minbpe's shape) with one typical mistake each, and
the words the checks must answer them with. ALTERNATIVES are other correct answers the checks must accept."""

from llmlab.labs.registry import Bug, planted

BPE = '''
def get_stats(ids):
    counts = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids, pair, idx):
    out, i = [], 0
    while i < len(ids):
        if i < len(ids) - 1 and (ids[i], ids[i + 1]) == pair:
            out.append(idx)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train(text, vocab_size):
    ids, merges = list(text.encode("utf-8")), []
    for i in range(vocab_size - 256):
        stats = get_stats(ids)
        if not stats:
            break
        pair = min(stats, key=lambda p: (-stats[p], p))
        ids = merge(ids, pair, 256 + i)
        merges.append(pair)
    return merges


def encode(text, merges):
    ranks = {pair: i for i, pair in enumerate(merges)}
    ids = list(text.encode("utf-8"))
    while len(ids) >= 2:
        pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, float("inf")))
        if pair not in ranks:
            break
        ids = merge(ids, pair, 256 + ranks[pair])
    return ids


def decode(ids, merges):
    vocab = {i: bytes([i]) for i in range(256)}
    for i, (a, b) in enumerate(merges):
        vocab[256 + i] = vocab[a] + vocab[b]
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")
'''

BUGS = [
    Bug("stats-sets", "get_stats", planted(BPE, "counts[pair] = counts.get(pair, 0) + 1", "counts[pair] = 1"),
        "count each occurrence"),
    Bug("merge-overlaps", "merge", planted(BPE, "            i += 2\n", "            i += 1\n"), "skip both ids"),
    Bug("train-ties-by-order", "train", planted(BPE, "pair = min(stats, key=lambda p: (-stats[p], p))",
                                                "pair = max(stats, key=stats.get)"), "ties go to the smallest pair"),
    Bug("train-same-id", "train", planted(BPE, "ids = merge(ids, pair, 256 + i)", "ids = merge(ids, pair, 256)"),
        "are new ids 256 + i"),
    Bug("train-one-merge-short", "train", planted(BPE, "range(vocab_size - 256)", "range(vocab_size - 257)"),
        "vocab_size - 256"),
    Bug("encode-in-order-of-position", "encode", planted(
        BPE, "        pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, float(\"inf\")))\n",
        "        pair = next((p for p in zip(ids, ids[1:]) if p in ranks), None)\n"), "lowest rank"),
    Bug("decode-per-token", "decode", planted(
        BPE, 'return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")',
        'return "".join(vocab[i].decode("utf-8", errors="replace") for i in ids)'), "decode UTF-8 once"),
    Bug("decode-strict", "decode", planted(BPE, '.decode("utf-8", errors="replace")', '.decode("utf-8")'),
        "errors='replace'"),
]

ALTERNATIVES = [  # collections.Counter, and merges applied in training order over the whole text
    planted(planted(BPE, '''    counts = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts''', '''    import collections

    return dict(collections.Counter(zip(ids, ids[1:])))'''), '''    ranks = {pair: i for i, pair in enumerate(merges)}
    ids = list(text.encode("utf-8"))
    while len(ids) >= 2:
        pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, float("inf")))
        if pair not in ranks:
            break
        ids = merge(ids, pair, 256 + ranks[pair])
    return ids''', '''    ids = list(text.encode("utf-8"))
    for i, pair in enumerate(merges):  # each merge in its rank order: the same result
        ids = merge(ids, pair, 256 + i)
    return ids'''),
]
