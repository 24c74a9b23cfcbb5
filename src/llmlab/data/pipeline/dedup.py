"""Deduplication: exact by content hash, and near-duplicate by MinHash with LSH banding and union-find.

MinHash (Broder 1997): the Jaccard similarity of two shingle sets equals the chance that a random
permutation of all shingles puts the same element first in both. With P permutations a document's
signature is its P minima, and the share of equal minima estimates the Jaccard similarity.

Permutations follow datasketch's default ("affine32"), so signatures are bit-for-bit datasketch's on the
same shingles, hash function and seed:

    h  = sha1(shingle)[:4] as little-endian uint32        (or xxh32: same role, ~3x faster)
    h  = fmix32(h)                                        MurmurHash3's finaliser, a bijection
    pk = (a_k * h + b_k) mod 2^32, a_k odd                k = 1..P, a and b from RandomState(seed)
    signature_k = min over shingles of pk

LSH banding (Indyk & Motwani 1998; Leskovec et al., Mining of Massive Datasets ch. 3): cut the signature
into b bands of r rows; two documents are candidates when all rows of some band agree, which happens with
probability 1 - (1 - s^r)^b for Jaccard s. `optimal_bands` picks (b, r) for a threshold the way
datasketch does: the pair minimising the area under that curve below the threshold (false positives)
plus the area above it missed (false negatives). Candidates are joined with union-find; each cluster keeps
its earliest document (in input order), so the result does not depend on which worker ran what.

Across shards (every executor): `collect` computes signatures per shard in the workers, `decide` groups
band rows of all shards on the driver, `apply_decision` drops the losers shard by shard.
This file does not do substring dedup (suffix arrays, Lee et al. 2022).
"""

import dataclasses
import hashlib
import struct
from itertools import pairwise

import numpy as np
import regex

from llmlab.data.pipeline.stage import Doc, GlobalStage, StageStats, Summary

SHINGLE_WORD = regex.compile(r"\w+")
MAX_HASH = np.uint32(0xFFFFFFFF)
FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))


def shingles(text: str, n: int = 5, unit: str = "word") -> set[str]:
    """Distinct n-grams of lower-cased words (joined by a space) or of characters.

    >>> sorted(shingles("The cat. The cat sat!", n=2))
    ['cat sat', 'cat the', 'the cat']
    >>> sorted(shingles("abab", n=2, unit="char"))
    ['ab', 'ba']

    A text shorter than n units is one shingle, so short documents still get a signature.
    """
    if unit == "char":
        flat = " ".join(text.lower().split())
        return {flat[i:i + n] for i in range(max(len(flat) - n + 1, 1))} if flat else set()
    words = SHINGLE_WORD.findall(text.lower())
    if len(words) <= n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def sha1_hash32(data: bytes) -> int:
    """datasketch's default hash: the first four bytes of SHA-1, little-endian."""
    return struct.unpack("<I", hashlib.sha1(data).digest()[:4])[0]


def hash_shingles(items: set[str], func: str = "sha1") -> np.ndarray:
    """uint32 hashes of the shingles' UTF-8 bytes, with 'sha1' (datasketch's default) or 'xxh32'."""
    if func == "xxh32":
        import xxhash

        h = xxhash.xxh32_intdigest
        return np.fromiter((h(s.encode("utf-8")) for s in items), dtype=np.uint32, count=len(items))
    return np.fromiter((sha1_hash32(s.encode("utf-8")) for s in items), dtype=np.uint32, count=len(items))


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(a, b), each (P,) uint32, a odd: datasketch's affine32 parameters for this seed."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser (uint32 arithmetic wraps, which is the point)."""
    s1, m1, s2, m2, s3 = FMIX32
    h = h ^ (h >> s1)
    h = h * m1
    h = h ^ (h >> s2)
    h = h * m2
    return h ^ (h >> s3)


def signature(hashes: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """The P minima over shingle hashes (S,) -> (P,) uint32; all 2^32-1 for an empty set."""
    sig = np.full(len(a), MAX_HASH, dtype=np.uint32)
    mixed = fmix32(hashes.astype(np.uint32))
    for start in range(0, len(mixed), chunk):  # (S, P) at most chunk rows at a time
        phv = mixed[start:start + chunk, None] * a[None, :] + b[None, :]  # (S, P), wraps mod 2^32
        np.minimum(sig, phv.min(axis=0), out=sig)
    return sig


def jaccard_estimate(sig1: np.ndarray, sig2: np.ndarray) -> float:
    return float(np.mean(sig1 == sig2))


def _integral(f, lo: float, hi: float, n: int = 2001) -> float:
    """Simpson's rule on n (odd) points; the curves here are smooth polynomials."""
    if hi <= lo:
        return 0.0
    x = np.linspace(lo, hi, n)
    w = np.ones(n)
    w[1:-1:2], w[2:-1:2] = 4, 2
    return float((hi - lo) / (n - 1) / 3 * np.dot(w, f(x)))


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising weighted false positive + negative areas.

    >>> optimal_bands(0.8, 128)
    (9, 13)
    """
    best, best_err = (0, 0), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = _integral(lambda s, b=bands, r=rows: 1 - (1 - s ** r) ** b, 0.0, threshold)
            fn = _integral(lambda s, b=bands, r=rows: (1 - s ** r) ** b, threshold, 1.0)
            err = fp * fp_weight + fn * fn_weight
            if err < best_err:
                best, best_err = (bands, rows), err
    return best


class UnionFind:
    """Disjoint sets over 0..n-1; the root of a set is always its smallest member."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            lo, hi = (rx, ry) if rx < ry else (ry, rx)
            self.parent[hi] = lo


def _split(flags: np.ndarray, kept: np.ndarray, sizes: list[int]) -> list[Summary]:
    """Cut global per-document arrays back into per-shard decisions."""
    bounds = np.cumsum([0] + sizes)
    return [{"drop": flags[s:e], "kept": kept[s:e]} for s, e in pairwise(bounds)]


def _cluster_report(roots: np.ndarray, ids: np.ndarray, stats: StageStats, n_examples: int = 5) -> None:
    """Cluster-size histogram and the largest clusters' ids into `stats.info`."""
    _, inverse, counts = np.unique(roots, return_inverse=True, return_counts=True)
    sizes = counts[counts > 1]
    hist = {str(int(s)): int(c) for s, c in zip(*np.unique(sizes, return_counts=True), strict=True)}
    largest = np.argsort(-counts, kind="stable")[:n_examples]
    stats.info.update({
        "clusters": int(len(sizes)),
        "documents in clusters": int(sizes.sum()),
        "cluster sizes": hist,
        "largest clusters": [ids[inverse == c][:5].tolist() for c in largest if counts[c] > 1],
    })


@dataclasses.dataclass
class ExactDedup(GlobalStage):
    name = "exact_dedup"

    def collect(self, docs: list[Doc]) -> Summary:
        digests = b"".join(hashlib.blake2b(d["text"].encode("utf-8"), digest_size=16).digest() for d in docs)
        return {"hash": np.frombuffer(digests, dtype=np.uint64).reshape(-1, 2),  # (n, 2): 128 bits
                "ids": np.array([d["id"] for d in docs], dtype=str)}

    def decide(self, summaries: list[Summary], stats: StageStats) -> list[Summary]:
        hashes = np.concatenate([s["hash"] for s in summaries]) if summaries else np.zeros((0, 2), np.uint64)
        ids = np.concatenate([s["ids"] for s in summaries]) if summaries else np.zeros(0, str)
        _, first, inverse = np.unique(hashes, axis=0, return_index=True, return_inverse=True)
        roots = first[inverse.reshape(-1)]  # each document -> the first document with its text
        _cluster_report(roots, ids, stats)
        return _split(roots != np.arange(len(roots)), ids[roots], [len(s["ids"]) for s in summaries])

    def apply_decision(self, docs: list[Doc], decision: Summary, stats: StageStats) -> list[Doc]:
        out = []
        for doc, drop, kept in zip(docs, decision["drop"], decision["kept"], strict=True):
            stats.seen(doc)
            if drop:
                stats.drop(doc, "exact duplicate", f"of {kept}")
            else:
                stats.kept(doc)
                out.append(doc)
        return out


@dataclasses.dataclass
class MinHashDedup(GlobalStage):
    name = "minhash_dedup"
    threshold: float = 0.8
    num_perm: int = 128
    ngram: int = 5  # word 5-grams, as datatrove's FineWeb setup
    unit: str = "word"
    hash: str = "sha1"
    seed: int = 1  # datasketch's default seed
    bands: int | None = None  # default: chosen from the threshold (optimal_bands)
    rows: int | None = None
    verify: bool = False  # keep only candidate pairs whose signature estimate reaches the threshold

    def check(self) -> None:
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold {self.threshold}: must be between 0 and 1")
        if self.unit not in ("word", "char"):
            raise ValueError(f"unit {self.unit!r}: must be 'word' or 'char'")
        if self.hash not in ("sha1", "xxh32"):
            raise ValueError(f"hash {self.hash!r}: must be 'sha1' (datasketch's default) or 'xxh32'")
        if self.num_perm < 2 or self.ngram < 1:
            raise ValueError("num_perm must be at least 2 and ngram at least 1")
        b, r = self.band_rows()
        if b * r > self.num_perm:
            raise ValueError(f"bands {b} x rows {r} = {b * r} is more than num_perm {self.num_perm}")

    def band_rows(self) -> tuple[int, int]:
        if self.bands and self.rows:
            return self.bands, self.rows
        return optimal_bands(self.threshold, self.num_perm)

    def signatures(self, docs: list[Doc]) -> np.ndarray:
        a, b = permutations(self.num_perm, self.seed)
        sigs = np.empty((len(docs), self.num_perm), dtype=np.uint32)  # (N, P)
        for i, doc in enumerate(docs):
            sigs[i] = signature(hash_shingles(shingles(doc["text"], self.ngram, self.unit), self.hash), a, b)
        return sigs

    def collect(self, docs: list[Doc]) -> Summary:
        return {"sig": self.signatures(docs), "ids": np.array([d["id"] for d in docs], dtype=str)}

    def decide(self, summaries: list[Summary], stats: StageStats) -> list[Summary]:
        sigs = np.concatenate([s["sig"] for s in summaries]) if summaries else np.zeros((0, self.num_perm))
        ids = np.concatenate([s["ids"] for s in summaries]) if summaries else np.zeros(0, str)
        n_bands, rows = self.band_rows()
        uf = UnionFind(len(sigs))
        has_shingles = np.flatnonzero((sigs != MAX_HASH).any(axis=1))  # empty texts all collide: leave them
        candidates = verified = 0
        for band in range(n_bands):
            keys = sigs[has_shingles, band * rows:(band + 1) * rows]  # (N', r)
            _, inverse = np.unique(keys, axis=0, return_inverse=True)
            order = np.argsort(inverse.reshape(-1), kind="stable")
            grouped = inverse.reshape(-1)[order]
            starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
            for s, e in zip(starts, np.r_[starts[1:], len(order)], strict=True):
                if e - s < 2:
                    continue
                members = has_shingles[order[s:e]]
                for m in members[1:]:
                    candidates += 1
                    if self.verify and jaccard_estimate(sigs[members[0]], sigs[m]) < self.threshold:
                        continue
                    verified += 1
                    uf.union(int(members[0]), int(m))
        roots = np.array([uf.find(i) for i in range(len(sigs))], dtype=np.int64)
        _cluster_report(roots, ids, stats)
        stats.info.update({"bands": n_bands, "rows": rows, "candidate pairs": candidates,
                           "pairs joined": verified})
        return _split(roots != np.arange(len(roots)), ids[roots] if len(ids) else ids,
                      [len(s["ids"]) for s in summaries])

    def apply_decision(self, docs: list[Doc], decision: Summary, stats: StageStats) -> list[Doc]:
        out = []
        for doc, drop, kept in zip(docs, decision["drop"], decision["kept"], strict=True):
            stats.seen(doc)
            if drop:
                stats.drop(doc, "near duplicate", f"of {kept}")
            else:
                stats.kept(doc)
                out.append(doc)
        return out
