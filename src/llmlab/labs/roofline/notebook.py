"""Lab: roofline, the notebook: FLOPs and bytes of a matmul, of attention and of a whole decoder, the roofline
and its two regimes, timing, the checks after each part; then this CPU's roofline measured, with the learner's
counts and timings placing matmuls, attention and an llmlab model's layers on it, and the MFU of a training step."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: the roofline

        Why does a model generate tokens one at a time far below the speed its chip is sold at, while training
        the same model gets close? Count what each operation computes and what it must move from memory, and one
        picture, the roofline (Williams, Waterman & Patterson 2009), answers it. You write:

        1. `matmul_cost` and `attention_cost`: FLOPs and bytes moved,
        2. `flops_per_token`: a whole decoder's training FLOPs per token, the numerator of MFU,
        3. `attainable_flops` and `bound_by`: the roofline and which side of it an operation is on,
        4. `achieved_flops`: a measurement of what an operation really reaches.

        Then you measure this CPU's roofline and place matmuls, attention and an llmlab model's layers on it.

        Open `roofline.py` next to this notebook, fill in a body, save, and rerun the check cell under it.
        `llmlab labs check roofline` runs the same checks in a terminal; `llmlab labs solution roofline` shows
        llmlab's code. (About 40 minutes.)
        '''),
    setup("roofline"),
    md(r'''
        ## 1. FLOPs and bytes of a matmul

        $(m, k) \times (k, n)$: each of the $m n$ outputs is a dot product of $k$ terms, a multiply and an add
        each, so $2mkn$ FLOPs. At the least, both inputs are read once and the output written once:
        $(mk + kn + mn)$ numbers of 4 bytes (float32) or 2 (bf16). Their ratio is the **arithmetic intensity**
        $I$, FLOPs per byte. A batch of rows reuses every weight it reads; decoding one token does not:
        '''),
    code('''
        for m in (1, 8, 64, 512, 4096):  # rows: tokens at once
            flops, moved = 2 * m * 4096 * 4096, 4 * (m * 4096 + 4096 * 4096 + m * 4096)
            print(f"({m:>4}, 4096) @ (4096, 4096): {flops / moved:7.1f} FLOPs per byte")
        '''),
    check_cell("roofline", "matmul_cost"),
    md(r'''
        ## 2. Attention

        Per batch row and head, $q k^\top$ is a $(T, D) \times (D, T)$ matmul and the weighted sum of values a
        $(T, T) \times (T, D)$ one: $4 T^2 D$ FLOPs together. A fused kernel (FlashAttention, torch's
        `scaled_dot_product_attention`) computes the $(T, T)$ scores block by block on the chip and never writes
        them out, so it moves only $q$, $k$, $v$ and the output: $4 B H T D$ numbers. Its intensity,
        $T / (\text{element bytes})$, grows with the sequence.
        '''),
    check_cell("roofline", "attention_cost"),
    md(r'''
        ## 3. A decoder's FLOPs per token

        Training does three matmuls per weight and token: the forward one (2 FLOPs) and two in backward, for the
        gradients of the input and of the weight (4). With $N$ the weights used in matmuls (the embedding
        lookup is free, the output head is not), PaLM's count is

        $$6N + 12 \cdot n_{layer} \cdot n_{head} \cdot d_{head} \cdot T$$

        where the second term is attention's $4 T H D$ per token forward, three times over. This is the
        numerator of MFU, model FLOPs utilisation: FLOPs per token x tokens per second / peak FLOP/s. The checks
        compare yours with llmlab's and with torch's own count on a real training step.
        '''),
    check_cell("roofline", "flops_per_token"),
    md(r'''
        ## 4. The roofline

        An operation of intensity $I$ can reach at most $\min(\text{peak}, I \times \text{bandwidth})$ FLOP/s.
        The two roofs meet at the **ridge point** $I = \text{peak} / \text{bandwidth}$: left of it an operation
        waits for memory (memory-bound: more FLOPs per byte would help), right of it for arithmetic
        (compute-bound). An H100's ridge (989 TFLOP/s of bf16, 3.35 TB/s) is near 300 FLOPs per byte: a decode
        step at 1 FLOP per byte can use a third of a percent of its peak.
        '''),
    check_cell("roofline", "attainable_flops"),
    check_cell("roofline", "bound_by"),
    md('''
        ## 5. Measuring

        Time an operation several times and keep the fastest: anything else on the machine only makes a call
        slower, so the minimum is the least disturbed figure. Call it once first: the first call allocates
        memory and picks kernels.
        '''),
    check_cell("roofline", "achieved_flops"),
    md('''
        ## 6. This CPU's roofline, with your counts and timings

        First the roofs: the best of 20 float32 square matmuls for the peak (`llmlab.train.profile`), reading
        64 MB for the memory bandwidth, a 2 MB copy for the cache's. Then your functions place four kinds of
        operation: a matmul of more and more rows against a 4096 x 4096 weight (64 MB, more than any cache here),
        fused attention of longer and longer sequences, and the linear layers of llmlab's `llama-tiny` at
        training shapes (8 x 256 tokens at once) and decoding shapes (one token). On a machine that other
        programs share, measure twice: the points move.
        '''),
    code('''
        import matplotlib.pyplot as plt
        import numpy as np
        import torch.nn.functional as F

        from llmlab.common.measure import best_seconds
        from llmlab.models import Transformer, get_preset
        from llmlab.train.profile import linear_matmuls, memory_bandwidth, peak_matmul_flops

        cpu = torch.device("cpu")
        peak = max(peak_matmul_flops(cpu), peak_matmul_flops(cpu, size=512))  # 512: often undisturbed on a busy core
        big = torch.randn(16 * 2**20)  # 64 MB, more than the caches hold: read it as a matmul reads its weight
        bandwidth = big.nbytes / best_seconds(big.sum, 10)
        cache_bandwidth = memory_bandwidth(cpu, megabytes=2)  # a copy small enough to stay in cache
        print(f"peak {peak / 1e9:.1f} GFLOP/s, memory {bandwidth / 1e9:.1f} GB/s, cache {cache_bandwidth / 1e9:.1f} "
              f"GB/s: the ridge at {peak / bandwidth:.1f} FLOPs per byte")


        def place(fn, cost):
            flops, moved = cost
            return flops / moved, lab.achieved_flops(fn, flops)  # (intensity, measured FLOP/s)


        points = {"matmul (m, 4096) @ (4096, 4096)": {}, "attention (1, 4, T, 64)": {},
                  "llama-tiny training": {}, "llama-tiny decoding": {}}
        w = torch.randn(4096, 4096)  # 64 MB: larger than this machine's caches
        for m in (1, 2, 8, 32, 128):
            x = torch.randn(m, 4096)
            points["matmul (m, 4096) @ (4096, 4096)"][f"m={m}"] = place(lambda: x @ w, lab.matmul_cost(m, 4096, 4096))
        for T in (16, 64, 256, 1024):
            q, k, v = (torch.randn(1, 4, T, 64) for _ in range(3))
            points["attention (1, 4, T, 64)"][f"T={T}"] = place(lambda: F.scaled_dot_product_attention(q, k, v),
                                                                lab.attention_cost(1, 4, T, 64))
        model = Transformer(get_preset("llama-tiny"))
        for phase, rows in (("training", 8 * 256), ("decoding", 1)):
            for mm in linear_matmuls(model, rows):
                x, w = torch.randn(mm.m, mm.k), torch.randn(mm.n, mm.k)
                cost = lab.matmul_cost(mm.m, mm.k, mm.n)
                points[f"llama-tiny {phase}"][mm.name] = place(lambda: F.linear(x, w), cost)

        for group, found in points.items():
            for name, (intensity, reached) in found.items():
                roof = lab.attainable_flops(intensity, peak, bandwidth)
                regime = lab.bound_by(intensity, peak, bandwidth)
                print(f"{group:>32} {name:>17}: {intensity:7.2f} FLOPs/byte, {reached / 1e9:6.1f} GFLOP/s, "
                      f"{100 * reached / roof:4.0f}% of the roof, {regime}-bound")
        '''),
    code('''
        x = np.geomspace(0.1, 2000, 200)
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        ax.plot(x, lab.attainable_flops(x, peak, bandwidth), color="black", label="roof: peak and memory bandwidth")
        ax.plot(x, lab.attainable_flops(x, peak, cache_bandwidth), color="gray", linestyle="--", linewidth=1,
                label="cache roof (data that fits in cache)")
        for (group, found), marker in zip(points.items(), "osD^", strict=True):
            ax.scatter([i for i, _ in found.values()], [f for _, f in found.values()], marker=marker, s=30,
                       zorder=3, label=group)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (FLOPs per byte moved)")
        ax.set_ylabel("FLOP/s measured")
        ax.set_title("this CPU's roofline, placed with your counts and timings")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right");
        '''),
    md('''
        Points left of the ridge climb with intensity along the memory roof; those right of it level off near
        the peak. Small operations whose data fits in cache can rise above the memory roof (the dashed one is
        theirs), and the smallest ones sit low for another reason: a call's fixed cost of microseconds. On a
        machine other programs share, long calls are interrupted more often than short ones, so the largest
        matmuls may sit below the roof they reach alone. Last, your `flops_per_token` gives the MFU of a real
        llmlab training step:
        '''),
    code('''
        from llmlab.models.gpt import flops_per_token
        from llmlab.train.profile import make_train_step, time_steps

        timing = time_steps(make_train_step(model, batch_size=4, seq_len=256), steps=3)
        tokens_per_s = 4 * 256 / timing["best_s"]
        yours = lab.flops_per_token(model.config, 256)
        print(f"llama-tiny: {tokens_per_s:.0f} tokens/s x {yours:.4g} FLOPs per token (llmlab counts "
              f"{flops_per_token(model.config, 256):.4g}) = MFU {yours * tokens_per_s / peak:.0%} of this core's peak")
        '''),
    md('''
        ## Done?

        `check("roofline")` runs every check. `llmlab profile --preset llama-tiny` goes further: the same roofline
        for every layer of a training and a decoding step, MBU (model bandwidth utilisation) for decoding,
        `torch.profiler` traces, bf16 and `torch.compile`; `docs/scaling.md` shows what it found on this machine.
        '''),
    check_cell("roofline"),
]
