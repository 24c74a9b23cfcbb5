"""Vector indexes for inner-product search, written here: exact (matmul + top-k) and IVF, optionally int8.

Search is memory-bound: each query reads the vectors it scores once, so the layout is chosen for reading.
- exact: the vectors are the columns of one (dim, N) matrix, so scoring is `queries @ columns`, a GEMV at
  batch 1 that streams the store row by contiguous row (a row-major (N, dim) store through `store @ q` ran
  2-3x slower in MKL at batch 1 on this CPU; the column GEMV runs as fast as faiss's own SIMD loop). Columns
  are scored a block at a time so scores never exceed `SCORE_BUDGET` floats (B x block: one block covers
  8M vectors at batch 1, 131k at batch 64), keeping a running top-k. Same ids as faiss `IndexFlatIP`.
- ivf: the inverted file of Jégou et al. 2011 (faiss `IndexIVFFlat`): k-means (Lloyd; spherical, assigned by
  inner product) cuts the space into `nlist` cells; each vector lives in its nearest cell; a query scores only
  the vectors in its `nprobe` nearest cells. The vectors are stored cell by cell in pages of `PAGE` columns,
  pages (n_pages, dim, PAGE), a cell's last page padded with zero columns (id -1, score -inf), as paged
  attention keeps KV blocks. Every page belongs to one cell, so a batch of queries becomes (query, page)
  pairs, grouped by page into a `bmm` of (pages, queries of the page, dim) x (pages, dim, PAGE): each probed
  page is read once per batch, however many queries probe it (faiss reads it once per query). No Python
  loop over cells or queries; one over chunks of pages, to bound memory.
- int8: each vector stored as round(127 * v / max|v|) with its scale (4x smaller); scores are computed on the
  int8 columns turned to float a block (or the probed pages) at a time, times the scales.
Vectors carry int64 ids; `add` appends (an IVF assigns new vectors to the trained cells, as faiss does, without
retraining), `delete` removes by id; both rebuild the store (O(N), meant for batches). `state()` gives tensors
and JSON fields to save (vectors as (N, dim) rows, padding left out, as before the layouts changed); nothing
is pickled. HNSW is not here: a graph walk is one small step per hop, slow in Python, and IVF batched this way
is within reach of faiss. This file knows nothing about text, chunks or files.
"""

import math

import torch

from llmlab.common.errors import UserError

KINDS = ("exact", "ivf")
SCORE_BUDGET = 1 << 23  # floats of scores (and dequantised int8) held at once: 32 MB whatever corpus or batch
QUERY_CHUNK = 1024  # queries searched together: an IVF reads each probed page once per chunk
PAGE = 32  # IVF columns per page: padding wastes under PAGE per cell; bmm's small matrices want it not tiny
POINTS_PER_CELL = 128  # k-means trains on at most this many sampled vectors per cell (faiss uses 256)


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: (N, d) float -> (N, d) int8 and (N,) scales, x ~= q * scale."""
    scale = x.abs().amax(dim=1).clamp(min=1e-12) / 127  # (N,)
    return (x / scale[:, None]).round().clamp(-127, 127).to(torch.int8), scale


def ranges(first: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Every index of a list of ranges, in order: first=[4, 10], count=[2, 3] -> [4, 5, 10, 11, 12]."""
    before = count.cumsum(0) - count  # where each range starts in the output
    return torch.repeat_interleave(first - before, count) + torch.arange(int(count.sum()))


def _merge_topk(scores: torch.Tensor, cols: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    top = scores.topk(min(k, scores.shape[1]), dim=1)
    return top.values, cols.gather(1, top.indices)


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
        self.centroids: torch.Tensor | None = None  # (nlist, dim), ivf once trained
        self._store(torch.empty(0, dim, dtype=torch.int8 if int8 else torch.float32),
                    torch.empty(0) if int8 else None, torch.empty(0, dtype=torch.int64))

    def __len__(self) -> int:
        return self.count

    # ---- the store ----------------------------------------------------------------------------------

    def _store(self, rows: torch.Tensor, scales: torch.Tensor | None, ids: torch.Tensor,
               cells: torch.Tensor | None = None) -> None:
        """Keep these n vectors (rows (n, dim), scales (n,), ids (n,)). Exact: columns (dim, n). IVF: pages
        (pages, dim, PAGE) cell by cell, by `cells` (n,); ids, scales and cells per column (-1: padding);
        cell_pages (nlist + 1,), and bias (pages, PAGE): 0, or -inf on padding."""
        self.count = len(ids)
        if self.kind == "exact" or self.centroids is None:
            self.columns, self.scales, self.ids = rows.T.contiguous(), scales, ids
            self.pages = self.cells = self.cell_pages = self.bias = None
            return
        nlist = len(self.centroids)
        order = torch.argsort(cells, stable=True)
        cells = cells[order]
        sizes = torch.bincount(cells, minlength=nlist)
        self.cell_pages = torch.zeros(nlist + 1, dtype=torch.int64)  # cell c's pages: cell_pages[c]:[c + 1]
        self.cell_pages[1:] = ((sizes + PAGE - 1) // PAGE).cumsum(0)
        width = int(self.cell_pages[-1]) * PAGE
        # column of the j-th vector (in cell order): its cell's first column + its place in the cell
        slot = self.cell_pages[cells] * PAGE + torch.arange(len(cells)) - (sizes.cumsum(0) - sizes)[cells]
        padded = rows.new_zeros(width, self.dim)
        padded[slot] = rows[order]
        # (width, dim) -> (pages, PAGE, dim) -> (pages, dim, PAGE): a page is a (dim, PAGE) block of columns
        self.columns, self.pages = None, padded.view(-1, PAGE, self.dim).transpose(1, 2).contiguous()
        self.ids = torch.full((width,), -1, dtype=torch.int64)
        self.ids[slot] = ids[order]
        self.cells = torch.full((width,), -1, dtype=torch.int64)
        self.cells[slot] = cells
        self.scales = None
        if scales is not None:
            self.scales = torch.zeros(width)
            self.scales[slot] = scales[order]
        self.bias = torch.where(self.ids >= 0, 0.0, float("-inf")).view(-1, PAGE)

    def _real(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """The stored vectors without padding: rows (n, dim), scales, ids, cells (ivf)."""
        if self.pages is None:
            return self.columns.T, self.scales, self.ids, None
        keep = self.ids >= 0
        rows = self.pages.transpose(1, 2).reshape(-1, self.dim)[keep]  # (pages, PAGE, dim) -> (n, dim)
        return rows, None if self.scales is None else self.scales[keep], self.ids[keep], self.cells[keep]

    def _dequantised(self) -> torch.Tensor:
        """The stored vectors as float rows (n, dim)."""
        rows, scales, _, _ = self._real()
        return rows.float() * scales[:, None] if scales is not None else rows

    # ---- building -----------------------------------------------------------------------------------

    def train(self, sample: torch.Tensor, seed: int = 0) -> None:
        """Fit the IVF cells on a sample of the vectors (about sqrt(N) cells unless nlist was given)."""
        n = len(sample)
        if n == 0:
            raise UserError("an IVF index needs vectors to train its cells on; add some first")
        nlist = min(self.nlist or max(1, round(math.sqrt(n))), n)
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(n, generator=g)[:nlist * POINTS_PER_CELL]
        stored, ids = (self._dequantised(), self.ids[self.ids >= 0]) if len(self) else (None, None)
        self.centroids = kmeans(sample[pick], nlist, seed=seed)
        self.nlist = nlist
        self._store(self._real()[0][:0], None if self.scales is None else self.scales[:0], self.ids[:0],
                    torch.empty(0, dtype=torch.int64))
        if stored is not None:  # vectors already stored: put them in their cells
            self.add(stored, ids)

    def add(self, vectors: torch.Tensor, ids: torch.Tensor) -> None:
        """Append vectors (N, dim) with their int64 ids (N,); an untrained IVF trains on this first batch."""
        vectors = vectors.float()
        if vectors.dim() != 2 or vectors.shape[1] != self.dim or len(ids) != len(vectors):
            raise UserError(f"index add: expected (N, {self.dim}) vectors and N ids, got {tuple(vectors.shape)} "
                            f"and {len(ids)}; was the index built with another embedder?")
        if self.kind == "ivf" and self.centroids is None:
            self.train(vectors)
        rows, scales, old_ids, cells = self._real()
        if self.int8:
            q, s = quantize_int8(vectors)
            rows, scales = torch.cat([rows, q]), torch.cat([scales, s])
        else:
            rows = torch.cat([rows, vectors])
        ids = torch.cat([old_ids, torch.as_tensor(ids, dtype=torch.int64)])
        if self.kind == "ivf":
            cells = torch.cat([cells, (vectors @ self.centroids.T).argmax(dim=1)])
        self._store(rows, scales, ids, cells)

    def delete(self, ids: torch.Tensor | list[int]) -> int:
        """Remove the vectors with these ids; returns how many were removed."""
        rows, scales, old_ids, cells = self._real()
        keep = ~torch.isin(old_ids, torch.as_tensor(ids, dtype=torch.int64))
        self._store(rows[keep], None if scales is None else scales[keep], old_ids[keep],
                    None if cells is None else cells[keep])
        return int((~keep).sum())

    def default_nprobe(self) -> int:
        """About an eighth of the cells (at least 8): recall@10 >= 0.95 against exact on embedding-like data."""
        return min(self.nlist or 1, max(8, math.ceil((self.nlist or 1) / 8)))

    # ---- searching ----------------------------------------------------------------------------------

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
        if not len(queries):
            return torch.empty(0, k), torch.empty(0, k, dtype=torch.int64)
        if self.pages is not None and len(self):
            nprobe = min(nprobe or self.nprobe or self.default_nprobe(), len(self.centroids))
            parts = [self._search_ivf(chunk, k, nprobe) for chunk in queries.split(QUERY_CHUNK)]
        else:
            parts = [self._search_exact(chunk, k) for chunk in queries.split(QUERY_CHUNK)]
        scores, cols = (torch.cat(p) for p in zip(*parts, strict=True))
        B = len(queries)
        if scores.shape[1] < k:  # pad to k columns
            pad = k - scores.shape[1]
            scores = torch.cat([scores, torch.full((B, pad), float("-inf"))], dim=1)
            cols = torch.cat([cols, torch.full((B, pad), -1, dtype=torch.int64)], dim=1)
        ids = torch.where(cols >= 0, self.ids[cols.clamp(min=0)], -1) if len(self) else cols
        return scores, ids

    def _search_exact(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores a block of columns at a time (B x block floats, and dim x block dequantised for int8)."""
        width = max(1, SCORE_BUDGET // (len(queries) + (self.dim if self.int8 else 0)))
        best_s, best_c = queries[:, :0], torch.empty(len(queries), 0, dtype=torch.int64)
        for start in range(0, len(self), width):
            block = self.columns[:, start:start + width]
            if self.int8:
                s = (queries @ block.float()) * self.scales[start:start + width]  # (B, block)
            else:
                s = queries @ block  # (B, block)
            top = s.topk(min(k, s.shape[1]), dim=1)
            if best_s.shape[1]:
                best_s, best_c = _merge_topk(torch.cat([best_s, top.values], 1),
                                             torch.cat([best_c, top.indices + start], 1), k)
            else:
                best_s, best_c = top.values, top.indices + start
        return best_s, best_c

    def _search_ivf(self, queries: torch.Tensor, k: int, nprobe: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Score the pages of each query's nprobe nearest cells, each page against every query that probes it
        (bmm over the probed pages), then keep the best k of each query's pages."""
        B, d = queries.shape
        probe = (queries @ self.centroids.T).topk(nprobe, dim=1).indices  # (B, nprobe)
        first = self.cell_pages[probe].flatten()  # (B * nprobe,) first page of each probed cell
        count = self.cell_pages[probe + 1].flatten() - first
        page = ranges(first, count)  # (P,) every (query, page) pair, query by query
        per_query = count.view(B, nprobe).sum(1)  # (B,) pairs of each query
        query = torch.repeat_interleave(torch.arange(B), per_query)  # (P,)
        # group the pairs by page: group g is page used[g] with the M (at most) queries that probe it
        order = page.argsort(stable=True)
        used, group, sizes = torch.unique_consecutive(page[order], return_inverse=True, return_counts=True)
        rank = torch.arange(len(page)) - (sizes.cumsum(0) - sizes)[group]  # place of the pair in its group
        slot = torch.full((len(used), int(sizes.max())), B)  # (U, M) query at each place; B: a zero row
        slot[group, rank] = query[order]
        top_s, top_c = self._score_pages(torch.cat([queries, queries.new_zeros(1, d)]), used, slot, sizes, k)
        # back to queries: pair p's candidates go to row query[p], at place p - (first pair of that query)
        g_of, r_of = torch.empty_like(group), torch.empty_like(rank)
        g_of[order], r_of[order] = group, rank
        place = torch.arange(len(page)) - (per_query.cumsum(0) - per_query)[query]
        kk = top_s.shape[2]
        cand_s = torch.full((B, int(per_query.max()), kk), float("-inf"))
        cand_c = torch.full((B, int(per_query.max()), kk), -1, dtype=torch.int64)
        cand_s[query, place], cand_c[query, place] = top_s[g_of, r_of], top_c[g_of, r_of]
        return _merge_topk(cand_s.view(B, -1), cand_c.view(B, -1), k)  # (B, pages * kk) -> (B, k)

    def _score_pages(self, queries: torch.Tensor, used: torch.Tensor, slot: torch.Tensor, sizes: torch.Tensor,
                     k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k (U, M, min(k, PAGE)) scores and columns of page used[g] against its sizes[g] queries
        queries[slot[g]], a chunk of pages per bmm within SCORE_BUDGET. Memory bandwidth is the cost, so a
        chunk whose pages are mostly probed reads the whole run of pages in place (the few unprobed ones scored
        against no query) rather than copying the probed ones out; a sparse chunk copies them."""
        B, kk = len(queries) - 1, min(k, PAGE)  # queries[B] is the zero row that pads
        out_s = torch.full((*slot.shape, kk), float("-inf"))
        out_c = torch.full((*slot.shape, kk), -1, dtype=torch.int64)
        step = max(1, SCORE_BUDGET // (self.dim * (PAGE + slot.shape[1])))  # pages per chunk
        g = 0
        while g < len(used):
            a = int(used[g])
            end = int(torch.searchsorted(used, a + step))  # the used pages among the next `step` pages
            u, m = used[g:end], int(sizes[g:end].max())
            b = int(u[-1]) + 1
            dense = 2 * len(u) >= b - a
            x = self.pages[a:b] if dense else self.pages[u]  # (n, d, PAGE)
            at = u - a if dense else torch.arange(len(u))  # where page used[g + i] is in x
            who = torch.full((len(x), m), B)  # (n, m) queries of each page of x
            who[at] = slot[g:end, :m]
            scores = torch.bmm(queries[who], x.float() if self.int8 else x)  # (n, m, d) x (n, d, PAGE)
            if self.int8:
                scores *= (self.scales.view(-1, PAGE)[a:b] if dense else self.scales.view(-1, PAGE)[u])[:, None]
            bias = self.bias[a:b] if dense else self.bias[u]  # padding columns are -inf
            top = (scores[at] + bias[at, None]).topk(kk, dim=2)  # (len(u), m, kk)
            out_s[g:end, :m] = top.values
            out_c[g:end, :m] = top.indices + u[:, None, None] * PAGE
            g = end
        return out_s, out_c

    # ---- saving -------------------------------------------------------------------------------------

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Tensors (for safetensors) and fields (for JSON) that `from_state` rebuilds the index from."""
        rows, scales, ids, cells = self._real()
        tensors = {"vectors": rows.contiguous(), "ids": ids.contiguous()}  # (N, dim) rows, as saved before
        if scales is not None:
            tensors["scales"] = scales.contiguous()
        if self.centroids is not None:
            tensors.update(centroids=self.centroids.contiguous(), cells=cells.contiguous())
        return tensors, {"dim": self.dim, "kind": self.kind, "int8": self.int8, "nlist": self.nlist,
                         "nprobe": self.nprobe}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], fields: dict) -> "VectorIndex":
        index = cls(fields["dim"], fields["kind"], fields["int8"], fields["nlist"], fields["nprobe"])
        vectors, ids = tensors["vectors"], tensors["ids"]
        if vectors.dim() != 2 or vectors.shape[1] != index.dim or len(ids) != len(vectors):
            raise UserError(f"index vectors of shape {tuple(vectors.shape)} do not match dim={index.dim} "
                            f"and {len(ids)} ids; the index folder is damaged: build it again")
        index.centroids = tensors.get("centroids")
        index._store(vectors, tensors.get("scales"), ids, tensors.get("cells"))
        return index
