"""Lab: roofline. Fill in the bodies below, then run `llmlab labs check roofline` (or the notebook).

A kernel that does F floating-point operations (FLOPs) while moving M bytes between memory and the chip has an
arithmetic intensity I = F / M FLOPs per byte. It can run no faster than the chip computes (peak FLOP/s), nor
faster than memory delivers its bytes (I x bandwidth): the roofline (Williams, Waterman & Patterson 2009) is

    attainable FLOP/s = min(peak, I x bandwidth)

Low-intensity kernels wait for memory (memory-bound), high-intensity ones for arithmetic (compute-bound).
A multiply-add counts as 2 FLOPs. element_bytes is the size of one number: 4 for float32, 2 for bf16.
"""

import time  # noqa: F401

import numpy as np  # noqa: F401


def matmul_cost(m: int, k: int, n: int, element_bytes: int = 4) -> tuple[int, int]:
    """(FLOPs, bytes moved) of (m, k) @ (k, n) -> (m, n).

    Each of the m * n outputs is a dot product of k terms, a multiply and an add each. Bytes: read both
    inputs once and write the output once. Example: matmul_cost(2, 3, 4) = (2*2*3*4, 4*(2*3 + 3*4 + 2*4)) = (48, 104).
    """
    raise NotImplementedError("TODO: two products")


def attention_cost(B: int, H: int, T: int, D: int, element_bytes: int = 4) -> tuple[int, int]:
    """(FLOPs, bytes moved) of self-attention's core, softmax(q k^T / sqrt(D)) v, for q, k, v of (B, H, T, D),
    run as one fused kernel (FlashAttention, torch's scaled_dot_product_attention).

    FLOPs: its two matmuls per batch row and head, q @ k^T (T x T scores of D terms each) and weights @ v.
    Count all T x T scores, as PaLM and llmlab do (a causal kernel may skip half); ignore the softmax's few
    FLOPs per score. Bytes: read q, k and v, write the output; a fused kernel keeps the scores on the chip.
    """
    raise NotImplementedError("TODO: FLOPs of the two matmuls, bytes of four (B, H, T, D) tensors")


def flops_per_token(config, seq_len: int | None = None) -> float:
    """Training FLOPs per token (forward and backward) of an llmlab decoder of `config` (a ModelConfig,
    dense: no experts), as PaLM's appendix B counts them: 6 N + 12 * n_layer * n_head * head_dim * T.

    N counts the weights used in matmuls; each costs 2 FLOPs per token forward and 4 backward. Per layer:
    q_proj and o_proj (n_embd x n_head * head_dim each), k_proj and v_proj (n_embd x n_kv_head * head_dim
    each), the MLP's matrices n_embd x intermediate_size (2 of them for mlp "gelu", 3 for "swiglu"); once, the
    output head n_embd x vocab_size. An embedding lookup costs no FLOPs. The second term is attention's
    scores and mixing (4 T H D per token forward, 3x that with backward); T = seq_len, or config.seq_len.
    Norms, biases and the softmax are left out.
    """
    raise NotImplementedError("TODO: the weights in matmuls per layer, times layers, plus the head; 6 N + attention")


def attainable_flops(intensity, peak: float, bandwidth: float):
    """The roofline: the most FLOP/s a kernel of `intensity` FLOPs per byte can reach on a chip of `peak`
    FLOP/s and `bandwidth` bytes/s. `intensity`: a number or a numpy array (-> the same shape)."""
    raise NotImplementedError("TODO: one line (numpy's elementwise minimum works for numbers and arrays)")


def bound_by(intensity: float, peak: float, bandwidth: float) -> str:
    """"memory" if a kernel of this intensity is limited by the bandwidth, "compute" if by the peak: which side
    of the ridge point (the intensity where the two roofs meet) it lies on."""
    raise NotImplementedError("TODO: the ridge point, then one comparison")


def achieved_flops(fn, flops: float, repeats: int = 5) -> float:
    """FLOP/s that `fn()` (doing `flops` FLOPs per call) reaches on this machine: call it once to warm up (the
    first call pays for allocations and choosing kernels), then `repeats` times, timing each call alone with
    time.perf_counter(); return flops / the fastest call's seconds. The fastest, not the mean: other programs
    on the machine only ever slow a call down."""
    raise NotImplementedError("TODO: a warm-up call, a timed loop, the best time")
