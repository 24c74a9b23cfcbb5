"""Vector indexes for inner-product search, written here: exact (blocked matmul + top-k) and IVF, optionally int8.

- exact: scores = queries @ vectors.T a block of rows at a time (`BLOCK` rows, so memory stays
  B x BLOCK however big the corpus), keeping a running top-k. Same ids as faiss `IndexFlatIP`.
- ivf: the inverted file of Jégou et al. 2011 (faiss `IndexIVFFlat`): k-means (Lloyd; spherical, assigned by
  inner product) cuts the space into `nlist` cells; each vector lives in its nearest cell; a query scores only
  the vectors in its `nprobe` nearest cells. Rows are kept sorted by cell, so a cell is a contiguous slice and
  a batch of queries costs one matmul per probed cell (all queries probing it at once).
- int8: each vector stored as round(127 * v / max|v|) with its scale (4x smaller); scores are computed on the
  dequantised rows, one block or cell at a time.
Vectors carry int64 ids; `add` appends (an IVF assigns new vectors to the trained cells, as faiss does, without
retraining), `delete` removes by id. `state()` gives tensors and JSON fields to save; nothing is pickled.
This file knows nothing about text, chunks or files.
"""

import math

import torch

from llmlab.common.errors import UserError

KINDS = ("exact", "ivf")
BLOCK = 65536  # rows scored at once by exact search: B x 65536 floats of scores, whatever the corpus size
FEW_QUERIES = 4  # up to this many queries, IVF gathers each query's cells; beyond, one matmul per cell
POINTS_PER_CELL = 128  # k-means trains on at most this many sampled vectors per cell (faiss uses 256)


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: (N, d) float -> (N, d) int8 and (N,) scales, x ~= q * scale."""
    scale = x.abs().amax(dim=1).clamp(min=1e-12) / 127  # (N,)
    return (x / scale[:, None]).round().clamp(-127, 127).to(torch.int8), scale


def _rows(vectors: torch.Tensor, scales: torch.Tensor | None, start: int, end: int) -> torch.Tensor:
    block = vectors[start:end]
    return block if scales is None else block.float() * scales[start:end, None]


def _merge_topk(scores: torch.Tensor, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    top = scores.topk(min(k, scores.shape[1]), dim=1)
    return top.values, rows.gather(1, top.indices)


def kmeans(x: torch.Tensor, n_clusters: int, iters: int = 20, seed: int = 0) -> torch.Tensor:
    """Spherical k-means centroids (K, d): random distinct points to start, assign by inner product, average,
    renormalise. An empty cell restarts at the point its cell fits worst (the farthest from any centroid)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(x.float(), dim=1)
    centroids = x[torch.randperm(len(x), generator=g)[:n_clusters]].clone()
    for _ in range(iters):
        sims = x @ centroids.T  # (N, K)
        best, assign = sims.max(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=n_clusters)
        empty = (counts == 0).nonzero().squeeze(1)
        if len(empty):
            sums[empty] = x[best.argsort()[:len(empty)]]  # the worst-fitting points seed empty cells
        centroids = torch.nn.functional.normalize(sums, dim=1)
    return centroids


class VectorIndex:
    """Inner-product search over id-tagged vectors: `add`, `delete`, `search`; kind "exact" or "ivf"."""

    def __init__(self, dim: int, kind: str = "exact", int8: bool = False, nlist: int | None = None,
                 nprobe: int | None = None):
        if kind not in KINDS:
            raise UserError(f"index kind {kind!r} is unknown; choose one of {', '.join(KINDS)}")
        if dim < 1 or (nlist is not None and nlist < 1) or (nprobe is not None and nprobe < 1):
            raise UserError(f"index: dim, nlist and nprobe must be at least 1 (got {dim}, {nlist}, {nprobe})")
        self.dim, self.kind, self.int8 = dim, kind, int8
        self.nlist, self.nprobe = nlist, nprobe  # None: chosen from the corpus size when trained / searched
        self.vectors = torch.empty(0, dim, dtype=torch.int8 if int8 else torch.float32)
        self.scales: torch.Tensor | None = torch.empty(0) if int8 else None
        self.ids = torch.empty(0, dtype=torch.int64)
        self.centroids: torch.Tensor | None = None  # (nlist, dim), ivf once trained
        self.cells = torch.empty(0, dtype=torch.int64)  # cell of each row (ivf); rows sorted by it
        self.starts = torch.zeros(1, dtype=torch.int64)  # cell c's rows: starts[c]:starts[c + 1]

    def __len__(self) -> int:
        return len(self.ids)

    def train(self, sample: torch.Tensor, seed: int = 0) -> None:
        """Fit the IVF cells on a sample of the vectors (about sqrt(N) cells unless nlist was given)."""
        n = len(sample)
        if n == 0:
            raise UserError("an IVF index needs vectors to train its cells on; add some first")
        nlist = min(self.nlist or max(1, round(math.sqrt(n))), n)
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(n, generator=g)[:nlist * POINTS_PER_CELL]
        self.centroids = kmeans(sample[pick], nlist, seed=seed)
        self.nlist = nlist
        if len(self):  # vectors already stored: put them in their cells
            vectors, ids = self._dequantised(), self.ids
            self._clear()
            self.add(vectors, ids)

    def _clear(self) -> None:
        self.vectors, self.ids = self.vectors[:0], self.ids[:0]
        self.scales = self.scales[:0] if self.scales is not None else None
        self.cells = self.cells[:0]

    def _dequantised(self) -> torch.Tensor:
        return _rows(self.vectors, self.scales, 0, len(self))

    def add(self, vectors: torch.Tensor, ids: torch.Tensor) -> None:
        """Append vectors (N, dim) with their int64 ids (N,); an untrained IVF trains on this first batch."""
        vectors = vectors.float()
        if vectors.dim() != 2 or vectors.shape[1] != self.dim or len(ids) != len(vectors):
            raise UserError(f"index add: expected (N, {self.dim}) vectors and N ids, got {tuple(vectors.shape)} "
                            f"and {len(ids)}; was the index built with another embedder?")
        if self.kind == "ivf" and self.centroids is None:
            self.train(vectors)
        if self.int8:
            q, s = quantize_int8(vectors)
            self.vectors, self.scales = torch.cat([self.vectors, q]), torch.cat([self.scales, s])
        else:
            self.vectors = torch.cat([self.vectors, vectors])
        self.ids = torch.cat([self.ids, torch.as_tensor(ids, dtype=torch.int64)])
        if self.kind == "ivf":
            self.cells = torch.cat([self.cells, (vectors @ self.centroids.T).argmax(dim=1)])
            self._sort_by_cell()

    def _sort_by_cell(self) -> None:
        order = torch.argsort(self.cells, stable=True)
        self._reorder(order)
        self.starts = torch.zeros(len(self.centroids) + 1, dtype=torch.int64)
        self.starts[1:] = torch.bincount(self.cells, minlength=len(self.centroids)).cumsum(0)

    def _reorder(self, rows: torch.Tensor) -> None:
        self.vectors, self.ids = self.vectors[rows], self.ids[rows]
        if self.scales is not None:
            self.scales = self.scales[rows]
        if self.kind == "ivf":
            self.cells = self.cells[rows]

    def delete(self, ids: torch.Tensor | list[int]) -> int:
        """Remove the vectors with these ids; returns how many were removed."""
        drop = torch.isin(self.ids, torch.as_tensor(ids, dtype=torch.int64))
        self._reorder((~drop).nonzero().squeeze(1))
        if self.kind == "ivf" and self.centroids is not None:
            self._sort_by_cell()
        return int(drop.sum())

    def default_nprobe(self) -> int:
        """About an eighth of the cells (at least 8): recall@10 >= 0.95 against exact on embedding-like data."""
        return min(self.nlist or 1, max(8, math.ceil((self.nlist or 1) / 8)))

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int, nprobe: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores (B, k), ids (B, k)) best first; id -1 with score -inf where fewer than k vectors were seen."""
        queries = queries.float()
        if queries.dim() == 1:
            queries = queries[None]
        if queries.shape[-1] != self.dim:
            raise UserError(f"query of dimension {queries.shape[-1]}, index of {self.dim}; use the index's embedder")
        if k < 1:
            raise UserError(f"k={k}: must be at least 1")
        B = len(queries)
        if self.kind == "ivf" and self.centroids is not None and len(self):
            scores, rows = self._search_ivf(queries, k, nprobe or self.nprobe or self.default_nprobe())
        else:
            scores, rows = self._search_exact(queries, k)
        if scores.shape[1] < k:  # pad to k columns
            pad = k - scores.shape[1]
            scores = torch.cat([scores, torch.full((B, pad), float("-inf"))], dim=1)
            rows = torch.cat([rows, torch.full((B, pad), -1, dtype=torch.int64)], dim=1)
        ids = torch.where(rows >= 0, self.ids[rows.clamp(min=0)], -1) if len(self) else rows
        return scores, ids

    def _search_exact(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        B = len(queries)
        best_s = torch.empty(B, 0)
        best_r = torch.empty(B, 0, dtype=torch.int64)
        for start in range(0, len(self), BLOCK):
            end = min(start + BLOCK, len(self))
            s = queries @ _rows(self.vectors, self.scales, start, end).T  # (B, block)
            top = s.topk(min(k, end - start), dim=1)
            best_s, best_r = _merge_topk(torch.cat([best_s, top.values], 1),
                                         torch.cat([best_r, top.indices + start], 1), k)
        return best_s, best_r

    def _search_ivf(self, queries: torch.Tensor, k: int, nprobe: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Score only the nprobe nearest cells: per probed cell, one matmul for every query that probes it,
        its top-k written into that query's slot for the cell; then the top-k over all slots."""
        B, nprobe = len(queries), min(nprobe, len(self.centroids))
        probe = (queries @ self.centroids.T).topk(nprobe, dim=1).indices  # (B, nprobe)
        if B <= FEW_QUERIES:
            return self._search_cells_gathered(queries, probe, k)
        slot_s = torch.full((B, nprobe, k), float("-inf"))
        slot_r = torch.full((B, nprobe, k), -1, dtype=torch.int64)
        hits = probe.flatten().argsort(stable=True)  # group (query, slot) pairs by cell
        cells = probe.flatten()[hits]
        bounds = torch.cat([torch.tensor([0]), (cells.diff() != 0).nonzero().squeeze(1) + 1, torch.tensor([len(hits)])])
        starts = self.starts.tolist()
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            c = int(cells[a])
            lo, hi = starts[c], starts[c + 1]
            if hi == lo:
                continue
            q_idx, s_idx = hits[a:b] // nprobe, hits[a:b] % nprobe
            s = queries[q_idx] @ _rows(self.vectors, self.scales, lo, hi).T  # (n_q, cell size)
            top = s.topk(min(k, hi - lo), dim=1)
            slot_s[q_idx, s_idx, :top.values.shape[1]] = top.values
            slot_r[q_idx, s_idx, :top.values.shape[1]] = top.indices + lo
        return _merge_topk(slot_s.view(B, -1), slot_r.view(B, -1), k)  # (B, nprobe * k) -> (B, k)

    def _search_cells_gathered(self, queries: torch.Tensor, probe: torch.Tensor, k: int
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Few queries: per query, gather the rows of its cells into one matrix and score them at once."""
        out_s, out_r = [], []
        for q, cells in zip(queries, probe, strict=True):
            lo, hi = self.starts[cells], self.starts[cells + 1]  # (nprobe,)
            sizes = hi - lo
            # every row index of every probed cell: lo of its cell + its place within the cell
            rows = torch.repeat_interleave(lo - (sizes.cumsum(0) - sizes), sizes) + torch.arange(int(sizes.sum()))
            block = self.vectors[rows] if self.scales is None else self.vectors[rows].float() * self.scales[rows, None]
            top = (block @ q).topk(min(k, len(rows)))
            pad = k - len(top.values)
            out_s.append(torch.cat([top.values, torch.full((pad,), float("-inf"))]))
            out_r.append(torch.cat([rows[top.indices], torch.full((pad,), -1, dtype=torch.int64)]))
        return torch.stack(out_s), torch.stack(out_r)

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Tensors (for safetensors) and fields (for JSON) that `from_state` rebuilds the index from."""
        tensors = {"vectors": self.vectors.contiguous(), "ids": self.ids.contiguous()}
        if self.scales is not None:
            tensors["scales"] = self.scales.contiguous()
        if self.centroids is not None:
            tensors.update(centroids=self.centroids.contiguous(), cells=self.cells.contiguous())
        return tensors, {"dim": self.dim, "kind": self.kind, "int8": self.int8, "nlist": self.nlist,
                         "nprobe": self.nprobe}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], fields: dict) -> "VectorIndex":
        index = cls(fields["dim"], fields["kind"], fields["int8"], fields["nlist"], fields["nprobe"])
        index.vectors, index.ids = tensors["vectors"], tensors["ids"]
        index.scales = tensors.get("scales")
        if "centroids" in tensors:
            index.centroids, index.cells = tensors["centroids"], tensors["cells"]
            index._sort_by_cell()
        if index.vectors.shape[1:] != (index.dim,) or len(index.ids) != len(index.vectors):
            raise UserError(f"index vectors of shape {tuple(index.vectors.shape)} do not match dim={index.dim} "
                            f"and {len(index.ids)} ids; the index folder is damaged: build it again")
        return index
