"""Lab: ngram-and-backprop. Fill in the bodies below, then run `llmlab labs check ngram-and-backprop` (or the
notebook).

Part 1, a character n-gram model: predict each character from the n - 1 before it, by counting. Each text is
padded on the left with n - 1 BOS characters, so its first characters have a context too; BOS is only ever
context, never predicted. The vocabulary holds the training characters plus UNK, which stands for any character
training never saw, so held-out text never gets probability 0.

Part 2, backpropagation by hand through GPT-2's MLP block, y = x + gelu(layernorm(x) @ w1 + b1) @ w2 + b2.
Each backward function takes dout, the gradient of the loss with respect to the piece's output, and returns
the gradients with respect to its inputs and weights: the chain rule, one piece at a time, in plain tensor
arithmetic (no autograd). Weights are stored (in, out), so a linear layer is x @ w + b (nn.Linear stores
(out, in)). Shapes: B batch, T positions, C channels, H the MLP's hidden width.
"""

import math  # noqa: F401
import random  # noqa: F401

import torch
import torch.nn.functional as F

BOS = "\x02"  # start of text: left padding, context only
UNK = "\ufffd"  # any character training never saw


# ---- part 1: n-grams ---------------------------------------------------------------------------------------

def count_ngrams(texts: list[str], n: int) -> dict[str, int]:
    """How often each string of n characters ends at each character of each text, the text padded on the
    left with n - 1 BOS. Each text on its own: an n-gram never spans two texts.

    count_ngrams(["abab"], 2) -> {BOS + "a": 1, "ab": 2, "ba": 1};  count_ngrams(["aab"], 1) -> {"a": 2, "b": 1}
    """
    raise NotImplementedError("TODO: pad each text with n - 1 BOS, then count every n characters ending at each")


class NgramModel:
    """An order-n character model with add-k smoothing, trained by counting `texts`.

    self.n, self.k as given; self.vocab: sorted(the texts' characters + UNK); self.counts: count_ngrams(texts, n).
    Also keep c(h) for every context h (the sum of c(h w) over w) in a dict: probs needs it for every character.
    """

    def __init__(self, texts: list[str], n: int, k: float = 1.0):
        raise NotImplementedError("TODO: n, k, vocab, counts, and the total count of each context")

    def probs(self, context: str) -> torch.Tensor:
        """P(w | h) = (c(h w) + k) / (c(h) + k V) for every w in self.vocab, in its order -> (V,).

        h is the last n - 1 characters of `context` (at least n - 1 long: the caller pads it with BOS); V is
        len(self.vocab). A context never seen has c(h) = 0, so every character gets 1 / V.
        """
        raise NotImplementedError("TODO: the last n - 1 characters, their counts, add k, divide")

    def nll(self, texts: list[str]) -> float:
        """Mean negative log-likelihood per character of `texts`, in nats (natural log): each text padded with
        n - 1 BOS, every character predicted from the n - 1 before it, a character not in vocab read as UNK.
        exp(nll) is the perplexity; nll / ln 2 the bits per character."""
        raise NotImplementedError("TODO: sum -log P(char | the n - 1 before it) over every character, divide")

    def sample(self, n_chars: int, seed: int = 0) -> str:
        """`n_chars` characters drawn one at a time with the weights probs(context), starting from n - 1 BOS
        and extending the context by each character drawn. The same seed gives the same text (use
        random.Random(seed), or a torch.Generator seeded with it)."""
        raise NotImplementedError("TODO: draw from probs(context), append, repeat")


# ---- part 2: backprop --------------------------------------------------------------------------------------

def linear_backward(dout: torch.Tensor, x: torch.Tensor, w: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For out = x @ w + b with x (..., in), w (in, out), dout (..., out): returns dx (..., in), dw (in, out)
    and db (out,). Every leading (batch, time) position used the same w and b, so theirs add up."""
    raise NotImplementedError("TODO: dx = dout @ w^T; dw and db summed over every leading position")


def gelu_backward(dout: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """For the exact GELU, out = x * Phi(x) with Phi the standard normal CDF (F.gelu's default), x and dout
    of any shape: returns dx. Phi(x) = (1 + erf(x / sqrt(2))) / 2, and its derivative is the normal density
    phi(x) = exp(-x^2 / 2) / sqrt(2 pi)."""
    raise NotImplementedError("TODO: the product rule on x * Phi(x), times dout")


def layernorm_backward(dout: torch.Tensor, x: torch.Tensor, w: torch.Tensor, eps: float = 1e-5
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For out = xhat * w + b over the last axis, xhat = (x - mean) / sqrt(var + eps) with the biased variance:
    x and dout (..., C), w (C,). Returns dx (..., C), dw (C,), db (C,).

    Mind that mean and var depend on x too: every channel of a row reaches every other through them.
    """
    raise NotImplementedError("TODO: recompute xhat and 1 / sqrt(var + eps); dxhat = dout * w; then dx")


def mlp_block(x: torch.Tensor, p: dict[str, torch.Tensor], eps: float = 1e-5) -> torch.Tensor:
    """GPT-2's MLP block with its residual (given): x (B, T, C) -> (B, T, C). The weights by name in `p`:
    ln.weight, ln.bias (C,); fc.weight (C, H), fc.bias (H,); proj.weight (H, C), proj.bias (C,)."""
    u = F.layer_norm(x, (x.shape[-1],), p["ln.weight"], p["ln.bias"], eps)  # (B, T, C)
    h = u @ p["fc.weight"] + p["fc.bias"]  # (B, T, H)
    return x + F.gelu(h) @ p["proj.weight"] + p["proj.bias"]  # (B, T, C)


def mlp_block_backward(dout: torch.Tensor, x: torch.Tensor, p: dict[str, torch.Tensor], eps: float = 1e-5
                       ) -> dict[str, torch.Tensor]:
    """The gradients of mlp_block(x, p, eps) given dout (B, T, C): a dict with "x" and each name of p.

    Recompute the forward's intermediate values first (you may use torch.nn.functional for the forward), then
    run your three backward functions from the output back to the input.
    """
    raise NotImplementedError("TODO: forward (u, h, a = gelu(h)), then proj, gelu, fc, layernorm and the residual")
