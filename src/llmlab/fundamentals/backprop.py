"""Backpropagation by hand through one transformer block, checked against torch.autograd.

The model is the smallest GPT (Radford et al. 2019): token + learned position embeddings, one Pre-LN block
(LayerNorm, causal multi-head self-attention, residual, LayerNorm, GELU MLP, residual), a final LayerNorm, an
untied output projection and the mean cross-entropy over every position. Each piece is a pair of functions:
`x_forward` returns its output and a cache of what the backward needs, `x_backward` takes the gradient of
the loss with respect to that output and returns the gradients of its inputs and weights. The backward
functions use plain tensor arithmetic under `torch.no_grad()`: no autograd anywhere in `forward_backward`.

Weights are stored (in, out), so a linear layer is `x @ w + b` and its weight gradient is `x^T @ dout`
(torch's nn.Linear stores (out, in); the reference path passes `w.T`). Shapes: B batch, T positions,
C = n_embd, H heads of D = C / H, V vocabulary.

The derivatives, in the order the backward meets them:
- cross-entropy of softmax: dlogits = (softmax(logits) - onehot(target)) / N;
- LayerNorm (Ba et al. 2016), xhat = (x - mean) * rstd: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat));
- GELU (Hendrycks & Gimpel 2016), x * Phi(x): d/dx = Phi(x) + x * phi(x);
- softmax rows p: dscores = p * (dp - sum(dp * p)); masked (future) entries have p = 0 and get no gradient;
- an embedding lookup: the rows' gradients are summed into the table (index_add), repeated tokens add up.

`autograd_grads` computes the same loss with torch.nn.functional (layer_norm, scaled_dot_product_attention,
gelu, cross_entropy) and torch.autograd: an independent path, not the manual functions run under autograd.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmlab.common.io import atomic_write

Params = dict[str, torch.Tensor]
Cache = tuple


def init_params(vocab_size: int, n_embd: int, seq_len: int, seed: int = 0, std: float = 0.02,
                dtype: torch.dtype = torch.float32) -> Params:
    """Random weights by name. LayerNorm gains start near 1 and biases near 0, but not exactly, so a test
    of their gradients does not pass by symmetry."""
    g = torch.Generator().manual_seed(seed)
    C, V = n_embd, vocab_size

    def randn(*shape: int, scale: float = std, mean: float = 0.0) -> torch.Tensor:
        return (mean + scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)

    p: Params = {"tok_emb": randn(V, C), "pos_emb": randn(seq_len, C)}
    for ln in ("ln1", "ln2", "ln_f"):
        p[f"{ln}.weight"] = randn(C, scale=0.1, mean=1.0)
        p[f"{ln}.bias"] = randn(C, scale=0.1)
    for name, (fan_in, fan_out) in {"attn.qkv": (C, 3 * C), "attn.proj": (C, C), "mlp.fc": (C, 4 * C),
                                    "mlp.proj": (4 * C, C)}.items():
        p[f"{name}.weight"] = randn(fan_in, fan_out)
        p[f"{name}.bias"] = randn(fan_out, scale=0.1 * std)
    p["lm_head.weight"] = randn(C, V)
    return p


def linear_forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> tuple[torch.Tensor, Cache]:
    out = x @ w  # (..., out)
    return (out if b is None else out + b), (x, w)


def linear_backward(dout: torch.Tensor, cache: Cache) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dx = dout @ w^T, dw = x^T @ dout and db = sum(dout), summed over every leading (batch, time) axis."""
    x, w = cache
    dx = dout @ w.T  # (..., in)
    x2, d2 = x.reshape(-1, x.shape[-1]), dout.reshape(-1, dout.shape[-1])  # (B*T, in), (B*T, out)
    return dx, x2.T @ d2, d2.sum(0)


def layernorm_forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                      eps: float = 1e-5) -> tuple[torch.Tensor, Cache]:
    mean = x.mean(-1, keepdim=True)  # (B, T, 1)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased variance, as LayerNorm uses
    rstd = (var + eps).rsqrt()  # (B, T, 1)
    xhat = (x - mean) * rstd  # (B, T, C)
    return xhat * w + b, (xhat, rstd, w)


def layernorm_backward(dout: torch.Tensor, cache: Cache) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xhat, rstd, w = cache
    dxhat = dout * w  # (B, T, C)
    dx = rstd * (dxhat - dxhat.mean(-1, keepdim=True) - xhat * (dxhat * xhat).mean(-1, keepdim=True))
    C = dout.shape[-1]
    return dx, (dout * xhat).reshape(-1, C).sum(0), dout.reshape(-1, C).sum(0)


def gelu_forward(x: torch.Tensor) -> tuple[torch.Tensor, Cache]:
    """The exact GELU, x * Phi(x) with Phi the standard normal CDF (nn.GELU's default, not the tanh fit)."""
    cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    return x * cdf, (x, cdf)


def gelu_backward(dout: torch.Tensor, cache: Cache) -> torch.Tensor:
    x, cdf = cache
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return dout * (cdf + x * pdf)


def attention_forward(x: torch.Tensor, w_qkv: torch.Tensor, b_qkv: torch.Tensor, w_o: torch.Tensor,
                      b_o: torch.Tensor, n_head: int) -> tuple[torch.Tensor, Cache]:
    """Causal multi-head self-attention (Vaswani et al. 2017), the explicit way: scores, mask, softmax, mix."""
    B, T, C = x.shape
    D = C // n_head
    qkv, qkv_cache = linear_forward(x, w_qkv, b_qkv)  # (B, T, 3C)
    q, k, v = (t.view(B, T, n_head, D).transpose(1, 2) for t in qkv.split(C, dim=-1))  # (B, H, T, D) each
    scale = 1.0 / math.sqrt(D)
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T, T): query i sees keys 0..i
    probs = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)  # (B, H, T, T)
    y = probs @ v  # (B, H, T, D)
    y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side again
    out, o_cache = linear_forward(y, w_o, b_o)
    return out, (qkv_cache, o_cache, q, k, v, probs, scale, n_head)


def attention_backward(dout: torch.Tensor, cache: Cache) -> tuple[torch.Tensor, ...]:
    """-> dx, dw_qkv, db_qkv, dw_o, db_o."""
    qkv_cache, o_cache, q, k, v, probs, scale, n_head = cache
    B, T, C = dout.shape
    dy, dw_o, db_o = linear_backward(dout, o_cache)  # dy (B, T, C)
    dy = dy.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, H, T, D)
    dprobs = dy @ v.transpose(-2, -1)  # (B, H, T, T)
    dv = probs.transpose(-2, -1) @ dy  # (B, H, T, D)
    dscores = probs * (dprobs - (dprobs * probs).sum(-1, keepdim=True)) * scale  # (B, H, T, T)
    dq = dscores @ k  # (B, H, T, D)
    dk = dscores.transpose(-2, -1) @ q  # (B, H, T, D)
    dqkv = torch.cat([t.transpose(1, 2).reshape(B, T, C) for t in (dq, dk, dv)], dim=-1)  # (B, T, 3C)
    dx, dw_qkv, db_qkv = linear_backward(dqkv, qkv_cache)
    return dx, dw_qkv, db_qkv, dw_o, db_o


def cross_entropy_forward(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, Cache]:
    """Mean -log softmax(logits)[target] over all B*T positions."""
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)  # (N, V)
    logprobs = flat - flat.logsumexp(dim=-1, keepdim=True)  # (N, V)
    rows = torch.arange(flat.shape[0])
    loss = -logprobs[rows, targets.reshape(-1)].mean()
    return loss, (logprobs.exp(), targets.reshape(-1), logits.shape)


def cross_entropy_backward(cache: Cache) -> torch.Tensor:
    probs, targets, shape = cache
    dlogits = probs.clone()  # (N, V)
    dlogits[torch.arange(len(targets)), targets] -= 1.0
    return (dlogits / len(targets)).reshape(shape)  # (B, T, V)


def forward_backward(params: Params, idx: torch.Tensor, targets: torch.Tensor, n_head: int) -> tuple[float, Params]:
    """The loss and the gradient of every parameter, by name, all computed by hand."""
    p = params
    B, T = idx.shape
    if T > p["pos_emb"].shape[0]:
        raise ValueError(f"sequence of {T} positions is longer than pos_emb ({p['pos_emb'].shape[0]} rows)")
    if p["tok_emb"].shape[1] % n_head:
        raise ValueError(f"n_embd={p['tok_emb'].shape[1]} is not divisible by n_head={n_head}")
    with torch.no_grad():
        x0 = p["tok_emb"][idx] + p["pos_emb"][:T]  # (B, T, C)
        a_in, ln1 = layernorm_forward(x0, p["ln1.weight"], p["ln1.bias"])
        a_out, attn = attention_forward(a_in, p["attn.qkv.weight"], p["attn.qkv.bias"], p["attn.proj.weight"],
                                        p["attn.proj.bias"], n_head)
        x1 = x0 + a_out
        m_in, ln2 = layernorm_forward(x1, p["ln2.weight"], p["ln2.bias"])
        h, fc = linear_forward(m_in, p["mlp.fc.weight"], p["mlp.fc.bias"])  # (B, T, 4C)
        act, gelu = gelu_forward(h)
        m_out, proj = linear_forward(act, p["mlp.proj.weight"], p["mlp.proj.bias"])
        x2 = x1 + m_out
        f, lnf = layernorm_forward(x2, p["ln_f.weight"], p["ln_f.bias"])
        logits, head = linear_forward(f, p["lm_head.weight"], None)  # (B, T, V)
        loss, ce = cross_entropy_forward(logits, targets)

        g: Params = {}
        df, g["lm_head.weight"], _ = linear_backward(cross_entropy_backward(ce), head)
        dx2, g["ln_f.weight"], g["ln_f.bias"] = layernorm_backward(df, lnf)
        dact, g["mlp.proj.weight"], g["mlp.proj.bias"] = linear_backward(dx2, proj)  # the MLP branch of x2
        dm_in, g["mlp.fc.weight"], g["mlp.fc.bias"] = linear_backward(gelu_backward(dact, gelu), fc)
        dx1_mlp, g["ln2.weight"], g["ln2.bias"] = layernorm_backward(dm_in, ln2)
        dx1 = dx2 + dx1_mlp  # residual: x2 = x1 + mlp(ln2(x1)), so both paths reach x1
        da_in, g["attn.qkv.weight"], g["attn.qkv.bias"], g["attn.proj.weight"], g["attn.proj.bias"] = (
            attention_backward(dx1, attn))
        dx0_attn, g["ln1.weight"], g["ln1.bias"] = layernorm_backward(da_in, ln1)
        dx0 = dx1 + dx0_attn  # residual again
        C = dx0.shape[-1]
        g["tok_emb"] = torch.zeros_like(p["tok_emb"]).index_add_(0, idx.reshape(-1), dx0.reshape(-1, C))
        g["pos_emb"] = torch.zeros_like(p["pos_emb"])
        g["pos_emb"][:T] = dx0.sum(0)  # (T, C): every sequence of the batch uses the same positions
    return loss.item(), {name: g[name] for name in params}


def autograd_grads(params: Params, idx: torch.Tensor, targets: torch.Tensor, n_head: int) -> tuple[float, Params]:
    """The same loss through torch.nn.functional, differentiated by torch.autograd: the reference."""
    p = {name: t.detach().clone().requires_grad_(True) for name, t in params.items()}
    B, T = idx.shape
    C = p["tok_emb"].shape[1]
    x = F.embedding(idx, p["tok_emb"]) + p["pos_emb"][:T]  # (B, T, C)
    h = F.layer_norm(x, (C,), p["ln1.weight"], p["ln1.bias"], eps=1e-5)
    q, k, v = F.linear(h, p["attn.qkv.weight"].T, p["attn.qkv.bias"]).split(C, dim=-1)
    q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
    x = x + F.linear(y, p["attn.proj.weight"].T, p["attn.proj.bias"])
    h = F.layer_norm(x, (C,), p["ln2.weight"], p["ln2.bias"], eps=1e-5)
    h = F.gelu(F.linear(h, p["mlp.fc.weight"].T, p["mlp.fc.bias"]))
    x = x + F.linear(h, p["mlp.proj.weight"].T, p["mlp.proj.bias"])
    logits = F.linear(F.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"], eps=1e-5), p["lm_head.weight"].T)
    loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1))
    loss.backward()
    return loss.item(), {name: t.grad for name, t in p.items()}


@dataclass
class GradCheck:
    loss_manual: float
    loss_autograd: float
    max_abs_diff: dict[str, float]  # per tensor: max |manual - autograd|
    max_abs_grad: dict[str, float]  # per tensor: max |autograd|, the scale the difference is measured against

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values())


def compare_with_autograd(params: Params, idx: torch.Tensor, targets: torch.Tensor, n_head: int) -> GradCheck:
    loss_m, manual = forward_backward(params, idx, targets, n_head)
    loss_a, auto = autograd_grads(params, idx, targets, n_head)
    diff = {name: (manual[name] - auto[name]).abs().max().item() for name in params}
    scale = {name: auto[name].abs().max().item() for name in params}
    return GradCheck(loss_m, loss_a, diff, scale)


def train_manual(params: Params, next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]], n_head: int,
                 steps: int, lr: float = 3e-3, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 1e-8) -> list[float]:
    """Train `params` in place with the hand-written gradients and a hand-written Adam (Kingma & Ba 2015).

    Adam rather than plain SGD: with embeddings at std 0.02 and no warmup, one SGD learning rate is either too
    small for the embeddings or too large for the attention weights; per-weight scaling removes the tuning.
    """
    m = {name: torch.zeros_like(t) for name, t in params.items()}
    v = {name: torch.zeros_like(t) for name, t in params.items()}
    losses = []
    for step in range(1, steps + 1):
        idx, targets = next_batch()
        loss, grads = forward_backward(params, idx, targets, n_head)
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at step {step}; lower the learning rate")
        losses.append(loss)
        for name, g in grads.items():
            m[name].mul_(betas[0]).add_(g, alpha=1 - betas[0])
            v[name].mul_(betas[1]).addcmul_(g, g, value=1 - betas[1])
            m_hat = m[name] / (1 - betas[0] ** step)
            v_hat = v[name] / (1 - betas[1] ** step)
            params[name] -= lr * m_hat / (v_hat.sqrt() + eps)
    return losses


def plot_backprop(losses: list[float], check: GradCheck, path: str) -> None:
    """Training loss with the hand-written gradients (left); per tensor, |manual - autograd| against |grad| (right)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_diff) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax_loss.plot(range(1, len(losses) + 1), losses, linewidth=1)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("cross-entropy (nats per byte)")
    ax_loss.set_title("one block trained with manual backprop")
    ax_loss.grid(alpha=0.3)
    names = list(check.max_abs_diff)
    ys = range(len(names))
    ax_diff.barh(ys, [check.max_abs_grad[n] for n in names], color="lightgray", label="max |grad| (autograd)")
    ax_diff.barh(ys, [max(check.max_abs_diff[n], 1e-20) for n in names], color="C3", label="max |manual - autograd|")
    ax_diff.set_yticks(list(ys), names, fontsize=7)
    ax_diff.set_xscale("log")
    ax_diff.invert_yaxis()
    ax_diff.set_title("gradient check")
    ax_diff.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
