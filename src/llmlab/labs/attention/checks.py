"""Lab: attention, the checks. The references are torch's own: `F.scaled_dot_product_attention` and
`torch.nn.MultiheadAttention` with the learner's weights copied in. Each check also computes a few typical
mistakes (`_attend` with the mistake switched on) and names the one the learner's output equals.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call, close, diagnose, expect_tensor

CHECKS = CheckList()
SHAPES = [(1, 1, 1, 8), (1, 2, 1, 4), (3, 2, 7, 5), (2, 4, 16, 32)]  # (B, H, T, D): batch 1, seq 1, odd sizes
NOT_CAUSAL = "equal when causal=False, different when causal=True: look at the mask"  # the start of each message


def _attend(q, k, v, causal: bool, scale: float | None = None, softmax_dim: int = -1, fill: float = -math.inf,
            mask_after: bool = False, keep: str = "past") -> torch.Tensor:
    """Attention with one knob per typical mistake; the defaults are the right answer."""
    T, S = q.shape[-2], k.shape[-2]
    scores = q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5 if scale is None else scale)  # (B, H, T, S)
    allowed = {"past": torch.ones(T, S, dtype=torch.bool).tril(S - T),  # queries are the last T of S positions
               "past-from-first": torch.ones(T, S, dtype=torch.bool).tril(),  # queries are the first T
               "future": torch.ones(T, S, dtype=torch.bool).triu(S - T)}[keep]
    if causal and not mask_after:
        scores = scores.masked_fill(~allowed, fill)
    weights = scores.softmax(softmax_dim)
    if causal and mask_after:
        weights = weights * allowed
    return weights @ v  # (B, H, T, D)


def _qkv(B: int, H: int, T: int, D: int, scale: float = 1.0, S: int | None = None) -> tuple[torch.Tensor, ...]:
    q = torch.randn(B, H, T, D) * scale
    k, v = torch.randn(B, H, S or T, D) * scale, torch.randn(B, H, S or T, D)
    return q, k, v


def _scale_mistakes(q, k, v, causal: bool) -> dict[str, torch.Tensor]:
    D = q.shape[-1]
    return {
        "your scores are sqrt(head_dim) times too large: divide q @ k^T by sqrt(head_dim)":
            _attend(q, k, v, causal, scale=1.0),
        "your scores are sqrt(head_dim) times too small: divide by sqrt(head_dim), not by head_dim":
            _attend(q, k, v, causal, scale=1 / D),
        "your scores are head_dim times too large: you multiplied by sqrt(head_dim); divide instead":
            _attend(q, k, v, causal, scale=math.sqrt(D)),
        "softmax over the wrong axis: each query's weights over the keys must sum to 1 (softmax over the last "
        "dimension of the (B, H, T, S) scores)": _attend(q, k, v, causal, softmax_dim=-2),
    }


# ---- attention -------------------------------------------------------------------------------------------

@CHECKS.add("attention", "returns (batch, heads, seq, head_dim) and leaves its inputs alone")
def attention_shape(ws: Workspace) -> None:
    q, k, v = _qkv(2, 3, 5, 8)
    saved = [t.clone() for t in (q, k, v)]
    out = call(ws.get("attention"), q, k, v, causal=False)
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (2, 3, 5, 5):
        raise CheckFailed("returned (B, H, T, T), the attention weights: multiply them by v")
    expect_tensor(out, (2, 3, 5, 8), "attention(q, k, v)")
    for name, before, now in zip("qkv", saved, (q, k, v), strict=True):
        if not torch.equal(before, now):
            raise CheckFailed(f"attention changed its input {name} in place: compute new tensors instead "
                              "(x = x / s, not x /= s)")


@CHECKS.add("attention", "equals softmax(q k^T / sqrt(head_dim)) v with causal=False")
def attention_values(ws: Workspace) -> None:
    q, k, v = _qkv(2, 3, 6, 16)
    out = expect_tensor(call(ws.get("attention"), q, k, v, causal=False), v.shape, "attention(q, k, v, False)")
    mistakes = _scale_mistakes(q, k, v, causal=False)
    mistakes["with causal=False every query sees every key: you apply the causal mask either way"] = \
        _attend(q, k, v, causal=True)
    diagnose(out, F.scaled_dot_product_attention(q, k, v), mistakes,
             "differs from torch.nn.functional.scaled_dot_product_attention")


@CHECKS.add("attention", "causal=True: position i sees only positions j <= i")
def attention_causal(ws: Workspace) -> None:
    fn = ws.get("attention")
    q, k, v = _qkv(2, 3, 6, 16)
    if not close(call(fn, q, k, v, causal=False), F.scaled_dot_product_attention(q, k, v)):
        raise CheckFailed("different even with causal=False: make the causal=False check pass first")
    out = call(fn, q, k, v, causal=True)
    if isinstance(out, torch.Tensor) and out.shape == v.shape and not torch.isfinite(out).all():
        raise CheckFailed(f"{NOT_CAUSAL}; NaN where every key of a query is masked; a query must see itself "
                          "(keep the diagonal, j <= i)")
    out = expect_tensor(out, v.shape, "attention(q, k, v, causal=True)")
    default = call(fn, q, k, v)
    if not close(default, out):
        raise CheckFailed("attention(q, k, v) without causal= differs from causal=True: the default is True")
    diagnose(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), {
        f"{NOT_CAUSAL}; causal=True changes nothing, so queries see later keys": _attend(q, k, v, False),
        f"{NOT_CAUSAL}; it hides the past and keeps the future; keep keys j <= i (tril)":
            _attend(q, k, v, True, keep="future"),
        f"{NOT_CAUSAL}; masked scores set to 0 still get weight exp(0); fill them with -inf (or a very "
        "negative number) before the softmax": _attend(q, k, v, True, fill=0.0),
        f"{NOT_CAUSAL}; you mask after the softmax, so the weights no longer sum to 1; mask the scores "
        "before it": _attend(q, k, v, True, mask_after=True),
    }, NOT_CAUSAL)


@CHECKS.add("attention", "every shape: batch 1, sequence length 1, odd sizes")
def attention_shapes(ws: Workspace) -> None:
    fn = ws.get("attention")
    for B, H, T, D in SHAPES:
        q, k, v = _qkv(B, H, T, D)
        for causal in (False, True):
            out = expect_tensor(call(fn, q, k, v, causal=causal), (B, H, T, D),
                                f"for (B, H, T, D) = {(B, H, T, D)}, causal={causal}, attention")
            if not close(out, F.scaled_dot_product_attention(q, k, v, is_causal=causal)):
                raise CheckFailed(f"wrong for (B, H, T, D) = {(B, H, T, D)}, causal={causal}: are sizes "
                                  "hard-coded, or taken from the wrong dimension?")


@CHECKS.add("attention", "tiny and huge magnitudes (stable softmax)")
def attention_magnitudes(ws: Workspace) -> None:
    fn = ws.get("attention")
    for scale, words in ((30.0, "huge"), (1e-4, "tiny")):
        q, k, v = _qkv(2, 2, 7, 8, scale=scale)
        v = v * scale
        for causal in (False, True):
            out = call(fn, q, k, v, causal=causal)
            if isinstance(out, torch.Tensor) and not torch.isfinite(out).all():
                raise CheckFailed(f"NaN or inf for {words} scores: exp overflows; subtract each row's max before "
                                  "exp, or use torch.softmax")
            out = expect_tensor(out, v.shape, f"attention for {words} inputs")
            if not close(out, F.scaled_dot_product_attention(q, k, v, is_causal=causal), atol=1e-5 * scale):
                raise CheckFailed(f"wrong for {words} inputs (scale {scale:g}), causal={causal}: is a constant "
                                  "(an epsilon, a mask value) too small or too large for them?")


@CHECKS.add("attention", "gradients reach q, k and v, equal to torch's")
def attention_gradients(ws: Workspace) -> None:
    q, k, v = (t.requires_grad_() for t in _qkv(2, 2, 5, 8))
    weights = torch.randn(2, 2, 5, 8)
    out = expect_tensor(call(ws.get("attention"), q, k, v, causal=True), v.shape, "attention")
    if not out.requires_grad:
        raise CheckFailed("the output has no gradient: did you use .detach(), .item(), .numpy() or torch.no_grad()?")
    ours = torch.autograd.grad((out * weights).sum(), (q, k, v), allow_unused=True)
    ref = torch.autograd.grad((F.scaled_dot_product_attention(q, k, v, is_causal=True) * weights).sum(), (q, k, v))
    for name, g, r in zip("qkv", ours, ref, strict=True):
        if g is None:
            raise CheckFailed(f"no gradient reaches {name}: is it used through .detach() or a copy?")
        if not close(g, r):
            raise CheckFailed(f"the gradient for {name} differs from torch's (an in-place change of a tensor "
                              "autograd needs?)")


# ---- cross_attention -------------------------------------------------------------------------------------

@CHECKS.add("cross_attention", "T queries over S keys: shape (B, H, T, D), values equal to torch's")
def cross_values(ws: Workspace) -> None:
    q, k, v = _qkv(2, 3, 4, 8, S=9)
    out = call(ws.get("cross_attention"), q, k, v)
    expect_tensor(out, (2, 3, 4, 8), "cross_attention(q, k, v) with 4 queries and 9 keys")
    mistakes = _scale_mistakes(q, k, v, causal=False)
    mistakes["a query in cross-attention sees every key: there is no causal mask here"] = \
        (_attend(q, k, v, causal=True), _attend(q, k, v, causal=True, keep="past-from-first"))
    diagnose(out, F.scaled_dot_product_attention(q, k, v), mistakes,
             "differs from torch.nn.functional.scaled_dot_product_attention")


@CHECKS.add("cross_attention", "every shape: one query, one key, more queries than keys")
def cross_shapes(ws: Workspace) -> None:
    fn = ws.get("cross_attention")
    for B, H, T, S, D in ((1, 1, 1, 5, 4), (2, 2, 6, 1, 4), (1, 3, 9, 4, 7)):
        q, k, v = _qkv(B, H, T, D, S=S)
        out = expect_tensor(call(fn, q, k, v), (B, H, T, D), f"for T={T} queries and S={S} keys, cross_attention")
        if not close(out, F.scaled_dot_product_attention(q, k, v)):
            raise CheckFailed(f"wrong for T={T} queries and S={S} keys: do you assume T == S somewhere?")


# ---- MultiHeadAttention ----------------------------------------------------------------------------------

def _build(ws: Workspace, n_embd: int, n_head: int) -> nn.Module:
    cls = ws.get("MultiHeadAttention")
    module = call(cls, n_embd, n_head)
    if not isinstance(module, nn.Module):
        raise CheckFailed("MultiHeadAttention must subclass torch.nn.Module")
    return module


def _torch_twin(m: nn.Module, n_embd: int, n_head: int) -> nn.MultiheadAttention:
    """torch's multi-head attention holding the learner's weights."""
    twin = nn.MultiheadAttention(n_embd, n_head, batch_first=True)
    with torch.no_grad():
        twin.in_proj_weight.copy_(torch.cat([m.q_proj.weight, m.k_proj.weight, m.v_proj.weight]))
        twin.in_proj_bias.copy_(torch.cat([m.q_proj.bias, m.k_proj.bias, m.v_proj.bias]))
        twin.out_proj.weight.copy_(m.o_proj.weight)
        twin.out_proj.bias.copy_(m.o_proj.bias)
    return twin


def _twin_out(twin: nn.MultiheadAttention, x: torch.Tensor, causal: bool) -> torch.Tensor:
    T = x.shape[1]
    hidden = torch.ones(T, T, dtype=torch.bool).triu(1) if causal else None  # True: may not look
    return twin(x, x, x, attn_mask=hidden, need_weights=False)[0]


def _mha_mistakes(m: nn.Module, x: torch.Tensor, n_head: int, causal: bool) -> dict[str, torch.Tensor]:
    B, T, C = x.shape
    D = C // n_head
    q, k, v = m.q_proj(x), m.k_proj(x), m.v_proj(x)  # (B, T, C)

    def heads(t):  # (B, T, C) -> (B, H, T, D)
        return t.view(B, T, n_head, D).transpose(1, 2)

    def scrambled(t):  # the wrong split: a view straight to (B, H, T, D) mixes positions into the heads
        return t.reshape(B, n_head, T, D)

    def merged(y):  # (B, H, T, D) -> (B, T, C)
        return y.transpose(1, 2).reshape(B, T, C)

    right = _attend(heads(q), heads(k), heads(v), causal)
    wrong_split = _attend(scrambled(q), scrambled(k), scrambled(v), causal)
    split_message = ("your heads mix positions and channels: view (B, T, C) as (B, T, n_head, head_dim), then "
                     "transpose(1, 2); a view straight to (B, n_head, T, head_dim) scrambles them")
    return {
        split_message: (m.o_proj(wrong_split.reshape(B, T, C)), m.o_proj(merged(wrong_split))),
        "heads are merged in the wrong order: transpose (B, H, T, D) back to (B, T, H, D) before reshaping to "
        "(B, T, C)": m.o_proj(right.reshape(B, T, C)),
        "you scale by sqrt(n_embd); scale each head's scores by sqrt(head_dim)":
            m.o_proj(merged(_attend(heads(q), heads(k), heads(v), causal, scale=C ** -0.5))),
        "equal to one head over all C channels: split q, k and v into n_head heads":
            m.o_proj(_attend(q[:, None], k[:, None], v[:, None], causal)[:, 0]),
        "o_proj is not applied: project the merged heads with o_proj at the end": merged(right),
    }


@CHECKS.add("MultiHeadAttention", "registers q_proj, k_proj, v_proj, o_proj: nn.Linear(C, C) with biases")
def mha_parameters(ws: Workspace) -> None:
    m = _build(ws, 24, 4)
    params = dict(m.named_parameters())
    if not params:
        raise CheckFailed("no parameters registered: assign the layers to self (self.q_proj = nn.Linear(...)) "
                          "after super().__init__()")
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        layer = getattr(m, name, None)
        if not isinstance(layer, nn.Linear):
            raise CheckFailed(f"self.{name} should be an nn.Linear, found {type(layer).__name__}")
        if tuple(layer.weight.shape) != (24, 24) or layer.bias is None:
            raise CheckFailed(f"self.{name} should be nn.Linear(n_embd, n_embd) with a bias; found weight "
                              f"{tuple(layer.weight.shape)}, bias {'yes' if layer.bias is not None else 'no'}")
    extra = sorted(n for n in params if n.split(".")[0] not in ("q_proj", "k_proj", "v_proj", "o_proj"))
    if extra:
        raise CheckFailed(f"unexpected parameters {', '.join(extra)}: the four projections are all it needs")
    if not all(p.requires_grad for p in params.values()):
        raise CheckFailed("some parameters are frozen (requires_grad=False): every projection trains")


@CHECKS.add("MultiHeadAttention", "equals torch.nn.MultiheadAttention with the same weights (causal=False)")
def mha_values(ws: Workspace) -> None:
    m = _build(ws, 24, 4)
    x = torch.randn(2, 5, 24)
    out = expect_tensor(call(m, x, causal=False), x.shape, "MultiHeadAttention(x, causal=False)")
    with torch.no_grad():
        diagnose(out, _twin_out(_torch_twin(m, 24, 4), x, False), _mha_mistakes(m, x, 4, False),
                 "differs from torch.nn.MultiheadAttention with your weights")


@CHECKS.add("MultiHeadAttention", "causal=True (the default) equals torch's with a causal mask")
def mha_causal(ws: Workspace) -> None:
    m = _build(ws, 24, 4)
    x = torch.randn(2, 5, 24)
    out = expect_tensor(call(m, x), x.shape, "MultiHeadAttention(x)")
    with torch.no_grad():
        mistakes = {f"{NOT_CAUSAL}; causal=True changes nothing": _twin_out(_torch_twin(m, 24, 4), x, False)}
        mistakes.update(_mha_mistakes(m, x, 4, True))
        diagnose(out, _twin_out(_torch_twin(m, 24, 4), x, True), mistakes, NOT_CAUSAL)


@CHECKS.add("MultiHeadAttention", "every shape (batch 1, seq 1, odd widths), gradients to every projection")
def mha_shapes_and_gradients(ws: Workspace) -> None:
    for B, T, C, H in ((1, 1, 8, 2), (3, 7, 15, 3), (2, 9, 8, 1)):
        m = _build(ws, C, H)
        x = torch.randn(B, T, C)
        out = expect_tensor(call(m, x), (B, T, C), f"for x of shape {(B, T, C)} and n_head={H}, MultiHeadAttention")
        twin = _torch_twin(m, C, H)
        ref = _twin_out(twin, x, True)
        if not close(out, ref):
            raise CheckFailed(f"wrong for x of shape {(B, T, C)} with n_head={H}: sizes hard-coded?")
        weights = torch.randn(B, T, C)
        (out * weights).sum().backward()
        (ref * weights).sum().backward()
        missing = [n for n, p in m.named_parameters() if p.grad is None]
        if missing:
            raise CheckFailed(f"no gradient reaches {', '.join(missing)}: is it used in forward?")
        if not close(torch.cat([m.q_proj.weight.grad, m.k_proj.weight.grad, m.v_proj.weight.grad]),
                     twin.in_proj_weight.grad) or not close(m.o_proj.weight.grad, twin.out_proj.weight.grad):
            raise CheckFailed("outputs match torch's but the gradients of the projections do not")
