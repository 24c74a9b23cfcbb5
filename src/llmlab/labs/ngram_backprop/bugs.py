"""Lab: ngram-and-backprop, planted bugs: learner-style correct answers with one typical mistake each, and the
words the checks must answer them with. ALTERNATIVES are other correct answers the checks must accept."""

from llmlab.labs.registry import Bug, planted

NGRAM = '''
import math
import random

import torch

BOS = "\\x02"
UNK = "\\ufffd"


def count_ngrams(texts, n):
    counts = {}
    for text in texts:
        s = BOS * (n - 1) + text
        for i in range(len(s) - n + 1):
            counts[s[i:i + n]] = counts.get(s[i:i + n], 0) + 1
    return counts


class NgramModel:
    def __init__(self, texts, n, k=1.0):
        self.n, self.k = n, k
        self.vocab = sorted(set("".join(texts)) | {UNK})
        self.counts = count_ngrams(texts, n)
        self.totals = {}
        for gram, c in self.counts.items():
            self.totals[gram[:-1]] = self.totals.get(gram[:-1], 0) + c

    def probs(self, context):
        h = context[len(context) - self.n + 1:]
        V = len(self.vocab)
        return torch.tensor([(self.counts.get(h + w, 0) + self.k) / (self.totals.get(h, 0) + self.k * V)
                             for w in self.vocab])

    def nll(self, texts):
        total, chars = 0.0, 0
        for text in texts:
            s = BOS * (self.n - 1) + "".join(c if c in self.vocab else UNK for c in text)
            for i in range(self.n - 1, len(s)):
                p = self.probs(s[:i])[self.vocab.index(s[i])]
                total -= math.log(p)
            chars += len(text)
        return total / chars

    def sample(self, n_chars, seed=0):
        rng = random.Random(seed)
        s = BOS * (self.n - 1)
        for _ in range(n_chars):
            s += rng.choices(self.vocab, weights=self.probs(s).tolist())[0]
        return s[self.n - 1:]
'''

BACKPROP = '''
import math

import torch
import torch.nn.functional as F


def linear_backward(dout, x, w):
    x2, d2 = x.reshape(-1, x.shape[-1]), dout.reshape(-1, dout.shape[-1])
    return dout @ w.T, x2.T @ d2, d2.sum(0)


def gelu_backward(dout, x):
    cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    pdf = torch.exp(-0.5 * x ** 2) / math.sqrt(2 * math.pi)
    return dout * (cdf + x * pdf)


def layernorm_backward(dout, x, w, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    rstd = 1 / torch.sqrt(((x - mean) ** 2).mean(-1, keepdim=True) + eps)
    xhat = (x - mean) * rstd
    dxhat = dout * w
    dx = rstd * (dxhat - dxhat.mean(-1, keepdim=True) - xhat * (dxhat * xhat).mean(-1, keepdim=True))
    C = x.shape[-1]
    return dx, (dout * xhat).reshape(-1, C).sum(0), dout.reshape(-1, C).sum(0)


def mlp_block_backward(dout, x, p, eps=1e-5):
    u = F.layer_norm(x, (x.shape[-1],), p["ln.weight"], p["ln.bias"], eps)
    h = u @ p["fc.weight"] + p["fc.bias"]
    a = F.gelu(h)
    g = {}
    da, g["proj.weight"], g["proj.bias"] = linear_backward(dout, a, p["proj.weight"])
    dh = gelu_backward(da, h)
    du, g["fc.weight"], g["fc.bias"] = linear_backward(dh, u, p["fc.weight"])
    dx, g["ln.weight"], g["ln.bias"] = layernorm_backward(du, x, p["ln.weight"], eps)
    g["x"] = dx + dout
    return g
'''

LN_DX = "dx = rstd * (dxhat - dxhat.mean(-1, keepdim=True) - xhat * (dxhat * xhat).mean(-1, keepdim=True))"

BUGS = [
    Bug("no-padding", "count_ngrams", planted(NGRAM, "s = BOS * (n - 1) + text", "s = text"),
        "pad each text on the left with n - 1 BOS"),
    Bug("n-bos", "count_ngrams", planted(NGRAM, "s = BOS * (n - 1) + text", "s = BOS * n + text"),
        "pad with n - 1 BOS, not n"),
    Bug("joined-texts", "count_ngrams", planted(
        NGRAM, "    for text in texts:\n        s = BOS", '    for text in ["".join(texts)]:\n        s = BOS'),
        "an n-gram never spans two texts"),
    Bug("off-by-one", "count_ngrams", planted(NGRAM, "range(len(s) - n + 1)", "range(len(s) - n)"),
        "the last n-gram of each text is missing"),
    Bug("no-unk", "NgramModel", planted(NGRAM, 'sorted(set("".join(texts)) | {UNK})', 'sorted(set("".join(texts)))'),
        "it must include UNK"),
    Bug("denominator-k", "NgramModel", planted(NGRAM, "self.totals.get(h, 0) + self.k * V",
                                               "self.totals.get(h, 0) + self.k"), "the denominator is c(h) + k V"),
    Bug("unsmoothed-numerator", "NgramModel", planted(NGRAM, "(self.counts.get(h + w, 0) + self.k)",
                                                      "self.counts.get(h + w, 0)"), "add k to every count"),
    Bug("first-chars-as-context", "NgramModel", planted(NGRAM, "h = context[len(context) - self.n + 1:]",
                                                        "h = context[:self.n - 1]"), "LAST n - 1 characters"),
    Bug("whole-context", "NgramModel", planted(NGRAM, "h = context[len(context) - self.n + 1:]", "h = context"),
        "use only the last n - 1 characters"),
    Bug("log2", "NgramModel", planted(NGRAM, "total -= math.log(p)", "total -= math.log2(p)"), "natural log"),
    Bug("nll-sum", "NgramModel", planted(NGRAM, "return total / chars", "return total"), "not the sum"),
    Bug("nll-unpadded", "NgramModel", planted(NGRAM, 's = BOS * (self.n - 1) + "".join(', 's = "".join('),
        "pad each text with n - 1 BOS"),
    Bug("unseen-crash", "NgramModel", planted(NGRAM, '"".join(c if c in self.vocab else UNK for c in text)', "text"),
        "read a character not in vocab as UNK"),
    Bug("sample-greedy", "NgramModel", planted(NGRAM, "rng.choices(self.vocab, weights=self.probs(s).tolist())[0]",
                                               "self.vocab[int(self.probs(s).argmax())]"),
        "you always take the most likely character"),
    Bug("sample-uniform", "NgramModel", planted(NGRAM, "rng.choices(self.vocab, weights=self.probs(s).tolist())[0]",
                                                "rng.choice(self.vocab)"), "not uniformly over vocab"),
    Bug("sample-unseeded", "NgramModel", planted(NGRAM, "rng = random.Random(seed)", "rng = random.Random()"),
        "the same seed gave two different texts"),
    Bug("sample-no-bos", "NgramModel", planted(NGRAM, "        s = BOS * (self.n - 1)\n        for _ in range(n_chars)",
                                               '        s = ""\n        for _ in range(n_chars)'),
        "start from n - 1 BOS"),
    Bug("dx-untransposed", "linear_backward", planted(BACKPROP, "return dout @ w.T,", "return dout @ w,"),
        "w's transpose carries dout back"),
    Bug("dw-per-batch", "linear_backward", planted(BACKPROP, "x2.T @ d2, d2.sum(0)",
                                                   "x.transpose(-2, -1) @ dout, d2.sum(0)"),
        "sum their gradients over those axes"),
    Bug("db-mean", "linear_backward", planted(BACKPROP, "x2.T @ d2, d2.sum(0)", "x2.T @ d2, d2.mean(0)"),
        "not averaged"),
    Bug("gelu-no-chain", "gelu_backward", planted(BACKPROP, "return dout * (cdf + x * pdf)", "return cdf + x * pdf"),
        "multiply by dout"),
    Bug("gelu-cdf-only", "gelu_backward", planted(BACKPROP, "return dout * (cdf + x * pdf)", "return dout * cdf"),
        "you forgot the x * phi(x) term"),
    Bug("ln-constant-stats", "layernorm_backward", planted(BACKPROP, LN_DX, "dx = rstd * dxhat"),
        "treats the mean and the variance as constants"),
    Bug("ln-no-variance-term", "layernorm_backward", planted(
        BACKPROP, LN_DX, "dx = rstd * (dxhat - dxhat.mean(-1, keepdim=True))"), "misses the variance's share"),
    Bug("ln-no-weight", "layernorm_backward", planted(BACKPROP, "dxhat = dout * w", "dxhat = dout"),
        "dxhat = dout * w"),
    Bug("ln-dw-without-xhat", "layernorm_backward", planted(BACKPROP, "(dout * xhat).reshape(-1, C).sum(0), dout",
                                                            "dout.reshape(-1, C).sum(0), dout"), "not of dout alone"),
    Bug("ln-fixed-eps", "layernorm_backward", planted(BACKPROP, ".mean(-1, keepdim=True) + eps)",
                                                      ".mean(-1, keepdim=True) + 1e-5)"), "use the eps you are given"),
    Bug("block-no-residual", "mlp_block_backward", planted(BACKPROP, 'g["x"] = dx + dout', 'g["x"] = dx'),
        "add dout to dx"),
    Bug("block-gelu-at-output", "mlp_block_backward", planted(BACKPROP, "dh = gelu_backward(da, h)",
                                                              "dh = gelu_backward(da, a)"), "not its output"),
    Bug("block-fc-input", "mlp_block_backward", planted(BACKPROP, 'linear_backward(dh, u, p["fc.weight"])',
                                                        'linear_backward(dh, x, p["fc.weight"])'),
        "fc's input is layernorm(x), not x"),
    Bug("block-missing-bias", "mlp_block_backward", planted(
        BACKPROP, 'du, g["fc.weight"], g["fc.bias"] = linear_backward', 'du, g["fc.weight"], _ = linear_backward'),
        "fc.bias missing"),
]

ALTERNATIVES = [  # Counter and einsum, torch.multinomial with a Generator, LayerNorm's gradient summed, not averaged
    planted(planted(planted(planted(
        NGRAM, "def count_ngrams(texts, n):\n    counts = {}",
        "def count_ngrams(texts, n):\n    from collections import Counter\n    counts = Counter()"),
        "            counts[s[i:i + n]] = counts.get(s[i:i + n], 0) + 1", "            counts[s[i:i + n]] += 1"),
        "        rng = random.Random(seed)", "        g = torch.Generator().manual_seed(seed)"),
        "rng.choices(self.vocab, weights=self.probs(s).tolist())[0]",
        "self.vocab[int(torch.multinomial(self.probs(s), 1, generator=g))]"),
    planted(planted(BACKPROP, "return dout @ w.T, x2.T @ d2, d2.sum(0)",
                    'return dout @ w.T, torch.einsum("ni,no->io", x2, d2), d2.sum(0)'), LN_DX,
            "N = x.shape[-1]\n    dx = rstd / N * (N * dxhat - dxhat.sum(-1, keepdim=True) - xhat * (dxhat * xhat)"
            ".sum(-1, keepdim=True))"),
]
