"""Lab: positions, the checks. References are llmlab's own tables (`llmlab.models.layers`), which its tests hold
equal to transformers' (RoPE, ALiBi); and for RoPE also the property that makes it work: q . k after rotation
depends only on the distance between the two positions. Typical convention slips are named.
"""

import math

import torch

from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call, diagnose, expect_tensor
from llmlab.models.config import ModelConfig
from llmlab.models.layers import SinusoidalPositions, alibi_bias, alibi_slopes, apply_rope, rope_cos_sin, rope_inv_freq

CHECKS = CheckList()


def _sin_ref(T: int, C: int) -> torch.Tensor:
    return SinusoidalPositions(ModelConfig(n_embd=C, n_head=1))(torch.arange(T)[None])[0]  # (T, C)


def _rope_ref(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    cos, sin = rope_cos_sin(positions[None], rope_inv_freq(x.shape[-1], theta), x.dtype)
    return apply_rope(x, cos, sin)


@CHECKS.add("sinusoidal", "sin on even channels, cos on odd ones, at Vaswani's frequencies; any T and even C")
def sinusoidal_table(ws: Workspace) -> None:
    for T, C in ((10, 16), (1, 2), (7, 6)):
        out = expect_tensor(call(ws.get("sinusoidal"), T, C), (T, C), f"sinusoidal({T}, {C})")
        ref = _sin_ref(T, C)
        p = torch.arange(T, dtype=torch.float32)[:, None]
        i = torch.arange(0, C, 2, dtype=torch.float32)
        angles = p / 10000 ** (i / C)  # (T, C/2)
        diagnose(out, ref, {
            "interleave: channel 2i holds the sine and 2i+1 the cosine of the same angle (you put all the sines "
            "first)": torch.cat([angles.sin(), angles.cos()], -1),
            "sine and cosine are swapped: channel 2i is the sine": torch.stack([angles.cos(), angles.sin()], -1)
            .flatten(-2),
            "the exponent is 2i / C for the channel pair i, not i / C": torch.stack(
                [(p / 10000 ** (i / 2 / C)).sin(), (p / 10000 ** (i / 2 / C)).cos()], -1).flatten(-2),
            "the angle is p / 10000^(2i/C): divide by the power, don't multiply": torch.stack(
                [(p * 10000 ** (i / C)).sin(), (p * 10000 ** (i / C)).cos()], -1).flatten(-2),
        }, f"differs from the sinusoidal table for T={T}, C={C}", atol=1e-4)


@CHECKS.add("rope", "equals llmlab's (and Llama's) rotation; any batch, heads, length; other theta")
def rope_values(ws: Workspace) -> None:
    for (B, H, T, D), theta in (((2, 3, 5, 8), 10000.0), ((1, 1, 1, 4), 10000.0), ((1, 2, 6, 16), 500000.0)):
        x = torch.randn(B, H, T, D)
        positions = torch.arange(T) + 3  # not starting at 0, as after a cache
        out = expect_tensor(call(ws.get("rope"), x.clone(), positions, theta=theta), x.shape, "rope(x, positions)")
        half = D // 2
        freqs = positions[:, None].float() * rope_inv_freq(D, theta)  # (T, D/2)
        cos, sin = freqs.cos(), freqs.sin()
        a, b = x[..., :half], x[..., half:]
        x1, x2 = x[..., 0::2], x[..., 1::2]
        diagnose(out, _rope_ref(x, positions, theta), {
            "you rotate the pairs (2i, 2i+1), as the paper writes it; Llama and llmlab pair channel i with i + D/2 "
            "(rotate_half)": torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).flatten(-2),
            "the rotation goes the wrong way: (a, b) -> (a cos - b sin, b cos + a sin)":
                torch.cat([a * cos + b * sin, b * cos - a * sin], -1),
            "the positions are not used: the angle is position * frequency": x,
            "the frequencies are theta^(-2i/D) for the pair i, not theta^(-i/D)": _rope_ref_freq(x, positions, theta),
        }, f"differs from llmlab's RoPE for x of shape {(B, H, T, D)} and theta={theta}", atol=1e-4)


def _rope_ref_freq(x, positions, theta):
    D = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, D // 2, dtype=torch.float32) / D)  # the slip: i instead of 2i
    cos, sin = rope_cos_sin(positions[None], inv, x.dtype)
    return apply_rope(x, cos, sin)


@CHECKS.add("rope", "q . k after rotation depends only on the distance between positions; lengths are kept")
def rope_relative(ws: Workspace) -> None:
    fn = ws.get("rope")
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    scores = []
    for shift in (0, 5, 40):
        rq = call(fn, q.clone(), torch.tensor([7 + shift]))
        rk = call(fn, k.clone(), torch.tensor([3 + shift]))
        scores.append(float((rq * rk).sum()))
    if not all(math.isclose(s, scores[0], rel_tol=1e-4, abs_tol=1e-4) for s in scores):
        raise CheckFailed(f"q . k for positions (7, 3), (12, 8) and (47, 43) are {[round(s, 4) for s in scores]}: "
                          "the same distance must give the same score; rotate q and k by the same rule")
    rq = call(fn, q.clone(), torch.tensor([9]))
    if not math.isclose(float(rq.norm()), float(q.norm()), rel_tol=1e-4):
        raise CheckFailed("the rotation changed the vector's length: a rotation keeps it (cos^2 + sin^2 = 1)")


@CHECKS.add("alibi_bias", "-slope_h * (i - j) on the causal part, with the geometric slopes, any power-of-2 heads")
def alibi_values(ws: Workspace) -> None:
    for H, T in ((8, 6), (4, 1), (2, 9)):
        out = expect_tensor(call(ws.get("alibi_bias"), H, T), (H, T, T), f"alibi_bias({H}, {T})")
        positions = torch.arange(T)[None]
        ref = alibi_bias(alibi_slopes(H), positions, positions)[0]  # (H, T, T)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        distance = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).float()  # (T, T)
        slopes = alibi_slopes(H)[:, None, None]
        mistakes = {
            "the bias must be negative: a farther key gets a lower score": slopes * distance,
            "the slopes are in reverse order: head 0 has the largest, 2^(-8/n_head)":
                -slopes.flip(0) * distance,
            "the slopes are 2^(-8 (h + 1) / n_head), starting at h = 0 with 2^(-8/n_head)":
                -(2.0 ** (-8.0 * torch.arange(H) / H))[:, None, None] * distance,
        }
        diagnose(out[:, causal], ref[:, causal], {m: w[:, causal] for m, w in mistakes.items()},
                 f"differs from ALiBi's bias for {H} heads (on keys j <= i)")
