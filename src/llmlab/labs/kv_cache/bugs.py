"""Lab: kv-cache, planted bugs: learner-style correct answers with one typical mistake each, and the words the
checks must answer them with. ALTERNATIVES are other correct answers the checks must accept."""

from llmlab.labs.registry import Bug, planted

KV = '''
import torch


class KVCache:
    def __init__(self, n_layer, batch_size, n_kv_head, max_len, head_dim):
        self.k = torch.zeros(n_layer, batch_size, n_kv_head, max_len, head_dim)
        self.v = torch.zeros(n_layer, batch_size, n_kv_head, max_len, head_dim)
        self.pos = 0

    def update(self, layer, k, v):
        end = self.pos + k.shape[2]
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, T):
        self.pos += T


@torch.no_grad()
def greedy_decode(model, idx, max_new_tokens, use_cache=True):
    c = model.config
    B, T = idx.shape
    cache = KVCache(c.n_layer, B, c.n_kv_head, T + max_new_tokens, c.head_dim) if use_cache else None
    ids, new = idx, idx
    out = []
    for _ in range(max_new_tokens):
        logits = model(new if use_cache else ids, kv_cache=cache)
        nxt = logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        out.append(nxt)
        ids, new = torch.cat([ids, nxt], 1), nxt
    return torch.cat(out, 1)
'''

BUGS = [
    Bug("update-returns-new-only", "KVCache", planted(
        KV, "return self.k[layer, :, :, :end], self.v[layer, :, :, :end]", "return k, v"), "only the new keys"),
    Bug("update-moves-pos", "KVCache", planted(
        KV, "        return self.k[layer, :, :, :end]",
        "        self.pos = end\n        return self.k[layer, :, :, :end]"), "update moved pos"),
    Bug("update-returns-buffer", "KVCache", planted(
        KV, "return self.k[layer, :, :, :end], self.v[layer, :, :, :end]", "return self.k[layer], self.v[layer]"),
        "the whole buffer"),
    Bug("one-store-for-all-layers", "KVCache", planted(planted(planted(planted(
        KV, "self.k[layer, :, :, self.pos:end]", "self.k[0, :, :, self.pos:end]"),
        "self.v[layer, :, :, self.pos:end]", "self.v[0, :, :, self.pos:end]"),
        "self.k[layer, :, :, :end]", "self.k[0, :, :, :end]"), "self.v[layer, :, :, :end]", "self.v[0, :, :, :end]"),
        "keep one store per layer"),
    Bug("writes-at-zero", "KVCache", planted(planted(
        KV, "self.k[layer, :, :, self.pos:end] = k", "self.k[layer, :, :, :k.shape[2]] = k"),
        "self.v[layer, :, :, self.pos:end] = v", "self.v[layer, :, :, :k.shape[2]] = v"),
        "overwrote the first position"),
    Bug("no-cache-feeds-last-token", "greedy_decode", planted(KV, "model(new if use_cache else ids,", "model(new,"),
        "each step runs the whole sequence"),
    Bug("cache-feeds-everything", "greedy_decode", planted(KV, "model(new if use_cache else ids,", "model(ids,"),
        "only the newest token"),
    Bug("first-position-logits", "greedy_decode", planted(KV, "logits[:, -1].argmax", "logits[:, 0].argmax"),
        "argmax of the last position"),
]

GROWING = '''class KVCache:
    def __init__(self, n_layer, batch_size, n_kv_head, max_len, head_dim):
        self.k, self.v = [None] * n_layer, [None] * n_layer
        self.pos = 0

    def update(self, layer, k, v):
        if self.k[layer] is not None:  # the advanced positions, then the new ones
            k = torch.cat([self.k[layer][:, :, :self.pos], k], 2)
            v = torch.cat([self.v[layer][:, :, :self.pos], v], 2)
        self.k[layer], self.v[layer] = k, v
        return k, v

    def advance(self, T):
        self.pos += T


'''

ALTERNATIVES = [  # a cache that grows with torch.cat instead of a preallocated buffer
    planted(KV, KV[KV.index("class KVCache"):KV.index("@torch.no_grad()")], GROWING),
]
