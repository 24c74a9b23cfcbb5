"""Lab: roofline, the reference solution: llmlab's own counting and timing (llmlab.train.profile's `Matmul`,
llmlab.models.gpt's `flops_per_token`, llmlab.common.measure's `best_seconds`) behind the lab's names. The
roof itself is one line of `plot_roofline` in llmlab, so here it is written out.
"""

import numpy as np

from llmlab.common.measure import best_seconds
from llmlab.models import gpt
from llmlab.train.profile import Matmul


def matmul_cost(m: int, k: int, n: int, element_bytes: int = 4) -> tuple[int, int]:
    mm = Matmul("matmul", m, k, n, element_bytes=element_bytes)
    return mm.flops, mm.bytes


def attention_cost(B: int, H: int, T: int, D: int, element_bytes: int = 4) -> tuple[int, int]:
    scores, mix = Matmul("q @ k^T", T, D, T), Matmul("weights @ v", T, T, D)  # per batch row and head
    return B * H * (scores.flops + mix.flops), element_bytes * 4 * B * H * T * D  # q, k, v in; the output out


def flops_per_token(config, seq_len: int | None = None) -> float:
    return gpt.flops_per_token(config, seq_len)


def attainable_flops(intensity, peak: float, bandwidth: float):
    return np.minimum(peak, np.asarray(intensity, dtype=float) * bandwidth)


def bound_by(intensity: float, peak: float, bandwidth: float) -> str:
    return "memory" if intensity < peak / bandwidth else "compute"  # left of the ridge: bandwidth is the limit


def achieved_flops(fn, flops: float, repeats: int = 5) -> float:
    fn()  # warm-up
    return flops / best_seconds(fn, repeats)


LLMLAB_CODE = [Matmul, gpt.flops_per_token, best_seconds]  # printed by `llmlab labs solution roofline`
