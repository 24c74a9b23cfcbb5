"""Lab: ngram-and-backprop, the reference solution: llmlab's own n-gram models (llmlab.fundamentals.ngram) and
manual backpropagation (llmlab.fundamentals.backprop) behind the lab's names.

llmlab's `NgramLM` also does Kneser-Ney; the lab's model is its add-k smoothing. llmlab's backward functions
take the cache their forward returns; the adapters below run that forward first.
"""

import torch
import torch.nn.functional as F

from llmlab.fundamentals import backprop as bp
from llmlab.fundamentals import ngram
from llmlab.fundamentals.ngram import BOS, UNK

__all__ = ["BOS", "UNK", "NgramModel", "count_ngrams", "gelu_backward", "layernorm_backward", "linear_backward",
           "mlp_block", "mlp_block_backward"]


def count_ngrams(texts: list[str], n: int) -> dict[str, int]:
    return dict(ngram.count_ngrams(texts, n).raw[n])


class NgramModel:
    def __init__(self, texts: list[str], n: int, k: float = 1.0):
        counts = ngram.count_ngrams(texts, n)
        self.n, self.k, self.vocab, self.counts = n, k, counts.vocab, dict(counts.raw[n])
        self.lm = ngram.NgramLM(counts, n, smoothing="addk", k=k)

    def probs(self, context: str) -> torch.Tensor:
        return torch.tensor(self.lm.distribution(context), dtype=torch.float64)  # (V,)

    def nll(self, texts: list[str]) -> float:
        score = self.lm.score(texts)
        return score["nll"] / score["chars"]

    def sample(self, n_chars: int, seed: int = 0) -> str:
        return self.lm.sample(n_chars, seed=seed)


def linear_backward(dout: torch.Tensor, x: torch.Tensor, w: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return bp.linear_backward(dout, (x, w))


def gelu_backward(dout: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    _, cache = bp.gelu_forward(x)
    return bp.gelu_backward(dout, cache)


def layernorm_backward(dout: torch.Tensor, x: torch.Tensor, w: torch.Tensor, eps: float = 1e-5
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _, cache = bp.layernorm_forward(x, w, torch.zeros_like(w), eps)  # the bias does not change the gradients
    return bp.layernorm_backward(dout, cache)


def mlp_block(x: torch.Tensor, p: dict[str, torch.Tensor], eps: float = 1e-5) -> torch.Tensor:
    u = F.layer_norm(x, (x.shape[-1],), p["ln.weight"], p["ln.bias"], eps)  # (B, T, C)
    h = u @ p["fc.weight"] + p["fc.bias"]  # (B, T, H)
    return x + F.gelu(h) @ p["proj.weight"] + p["proj.bias"]  # (B, T, C)


def mlp_block_backward(dout: torch.Tensor, x: torch.Tensor, p: dict[str, torch.Tensor], eps: float = 1e-5
                       ) -> dict[str, torch.Tensor]:
    """The MLP half of llmlab's `forward_backward`: the same functions in the same order."""
    u, ln = bp.layernorm_forward(x, p["ln.weight"], p["ln.bias"], eps)
    h, fc = bp.linear_forward(u, p["fc.weight"], p["fc.bias"])
    a, gelu = bp.gelu_forward(h)
    _, proj = bp.linear_forward(a, p["proj.weight"], p["proj.bias"])
    g = {}
    da, g["proj.weight"], g["proj.bias"] = bp.linear_backward(dout, proj)
    du, g["fc.weight"], g["fc.bias"] = bp.linear_backward(bp.gelu_backward(da, gelu), fc)
    dx, g["ln.weight"], g["ln.bias"] = bp.layernorm_backward(du, ln)
    g["x"] = dout + dx  # the residual: y = x + mlp(ln(x)), so dout reaches x directly too
    return g


LLMLAB_CODE = [ngram.count_ngrams, ngram.NgramLM, bp.linear_backward, bp.gelu_backward, bp.layernorm_backward,
               bp.forward_backward]  # printed by `llmlab labs solution ngram-and-backprop`
