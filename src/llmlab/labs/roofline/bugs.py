"""Lab: roofline, planted bugs: learner-style correct answers with one typical mistake each, and the words the
checks must answer them with. ALTERNATIVES are other correct answers (a list of matrix shapes, three
times the forward pass, a timing loop with time.perf_counter_ns) the checks must accept."""

from llmlab.labs.registry import Bug, planted

ROOFLINE = '''
import time

import numpy as np


def matmul_cost(m, k, n, element_bytes=4):
    return 2 * m * k * n, element_bytes * (m * k + k * n + m * n)


def attention_cost(B, H, T, D, element_bytes=4):
    flops = B * H * (2 * T * T * D + 2 * T * T * D)  # q @ k^T, then weights @ v
    return flops, element_bytes * 4 * B * H * T * D


def flops_per_token(config, seq_len=None):
    c = config
    T = seq_len or c.seq_len
    attn = c.n_embd * c.head_dim * (2 * c.n_head + 2 * c.n_kv_head)
    mlp = c.n_embd * c.intermediate_size * (3 if c.mlp == "swiglu" else 2)
    n = c.n_layer * (attn + mlp) + c.n_embd * c.vocab_size
    return 6 * n + 12 * c.n_layer * c.n_head * c.head_dim * T


def attainable_flops(intensity, peak, bandwidth):
    return np.minimum(peak, intensity * bandwidth)


def bound_by(intensity, peak, bandwidth):
    return "memory" if intensity < peak / bandwidth else "compute"


def achieved_flops(fn, flops, repeats=5):
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return flops / best
'''

SUMMED = planted(planted(  # the times added up: the base of the mean and total mistakes
    ROOFLINE, "best = min(best, time.perf_counter() - start)", "total += time.perf_counter() - start"),
    'best = float("inf")', "total = 0.0")

BUGS = [
    Bug("matmul-mkn", "matmul_cost", planted(ROOFLINE, "return 2 * m * k * n,", "return m * k * n,"),
        "a multiply and an add: 2 m k n"),
    Bug("matmul-no-output", "matmul_cost", planted(ROOFLINE, "(m * k + k * n + m * n)", "(m * k + k * n)"),
        "the output (m, n) is written to memory too"),
    Bug("matmul-numbers-not-bytes", "matmul_cost", planted(ROOFLINE, "element_bytes * (m * k", "(m * k"),
        "you counted numbers"),
    Bug("attention-one-matmul", "attention_cost", planted(ROOFLINE, "(2 * T * T * D + 2 * T * T * D)",
                                                          "(2 * T * T * D)"), "half the FLOPs"),
    Bug("attention-one-head", "attention_cost", planted(ROOFLINE, "flops = B * H * (", "flops = ("),
        "multiply by the batch and the heads"),
    Bug("attention-scores-in-memory", "attention_cost", planted(
        ROOFLINE, "element_bytes * 4 * B * H * T * D", "element_bytes * (4 * B * H * T * D + 2 * B * H * T * T)"),
        "keeps the (T, T) scores on the chip"),
    Bug("attention-no-output", "attention_cost", planted(ROOFLINE, "element_bytes * 4 * B * H * T * D",
                                                         "element_bytes * 3 * B * H * T * D"),
        "the output (B, H, T, D) is written to memory too"),
    Bug("fpt-forward-only", "flops_per_token", planted(
        ROOFLINE, "return 6 * n + 12 * c.n_layer", "return 2 * n + 4 * c.n_layer"), "the forward pass only"),
    Bug("fpt-no-head", "flops_per_token", planted(ROOFLINE, " + c.n_embd * c.vocab_size", ""),
        "the output head (n_embd x vocab_size) is a matmul too"),
    Bug("fpt-embedding-too", "flops_per_token", planted(ROOFLINE, " + c.n_embd * c.vocab_size",
                                                        " + 2 * c.n_embd * c.vocab_size"),
        "an embedding lookup costs no FLOPs"),
    Bug("fpt-no-attention", "flops_per_token", planted(ROOFLINE, " + 12 * c.n_layer * c.n_head * c.head_dim * T", ""),
        "attention's scores and mixing are missing"),
    Bug("fpt-ignores-gqa", "flops_per_token", planted(ROOFLINE, "2 * c.n_kv_head", "2 * c.n_head"),
        "grouped-query attention"),
    Bug("fpt-two-matrix-swiglu", "flops_per_token", planted(ROOFLINE, '(3 if c.mlp == "swiglu" else 2)', "2"),
        "a SwiGLU MLP has 3 matrices"),
    Bug("fpt-ignores-seq-len", "flops_per_token", planted(ROOFLINE, "T = seq_len or c.seq_len", "T = c.seq_len"),
        "use seq_len when it is given"),
    Bug("roof-max", "attainable_flops", planted(ROOFLINE, "np.minimum(peak,", "np.maximum(peak,"), "min, not max"),
    Bug("roof-no-cap", "attainable_flops", planted(ROOFLINE, "np.minimum(peak, intensity * bandwidth)",
                                                   "intensity * bandwidth"), "there is no cap"),
    Bug("roof-python-min", "attainable_flops", planted(ROOFLINE, "np.minimum(peak, intensity * bandwidth)",
                                                       "min(peak, intensity * bandwidth)"), "use np.minimum"),
    Bug("regime-reversed", "bound_by", planted(ROOFLINE, '"memory" if intensity < peak / bandwidth else "compute"',
                                               '"compute" if intensity < peak / bandwidth else "memory"'),
        "the wrong way round"),
    Bug("regime-ridge-inverted", "bound_by", planted(ROOFLINE, "intensity < peak / bandwidth",
                                                     "intensity < bandwidth / peak"), "I = peak / bandwidth"),
    Bug("timing-mean", "achieved_flops", planted(SUMMED, "return flops / best", "return flops / (total / repeats)"),
        "over the mean time"),
    Bug("timing-total", "achieved_flops", planted(SUMMED, "return flops / best", "return flops / total"),
        "the time of all calls together"),
    Bug("timing-no-warm-up", "achieved_flops", planted(ROOFLINE, "    fn()\n    best", "    best"), "as a warm-up"),
    Bug("timing-returns-seconds", "achieved_flops", planted(ROOFLINE, "return flops / best", "return best"),
        "looks like seconds"),
]

MATRICES = """def flops_per_token(config, seq_len=None):
    c = config
    q, kv = c.n_head * c.head_dim, c.n_kv_head * c.head_dim
    mlp = [(c.n_embd, c.intermediate_size)] * (3 if c.mlp == "swiglu" else 2)
    per_layer = [(c.n_embd, q), (c.n_embd, kv), (c.n_embd, kv), (q, c.n_embd)] + mlp
    n = c.n_layer * sum(a * b for a, b in per_layer) + c.n_embd * c.vocab_size
    forward = 2 * n + 4 * c.n_layer * q * (seq_len or c.seq_len)
    return 3 * forward  # backward: twice the forward's FLOPs


"""

ALTERNATIVES = [  # a list of matrix shapes, three times the forward; nanosecond timing from a list of times
    planted(planted(ROOFLINE, ROOFLINE[ROOFLINE.index("def flops_per_token"):ROOFLINE.index("def attainable_flops")],
                    MATRICES),
            ROOFLINE[ROOFLINE.index("    fn()\n    best"):ROOFLINE.index("    return flops / best")],
            "    fn()\n    times = []\n    for _ in range(repeats):\n        t = time.perf_counter_ns()\n        fn()\n"
            "        times.append(time.perf_counter_ns() - t)\n    best = min(times) / 1e9\n"),
]
