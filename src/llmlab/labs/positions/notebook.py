"""Lab: positions, the notebook: why attention needs positions, sinusoidal tables, RoPE and ALiBi with their
checks, then the learner's RoPE inside llmlab's Llama-style decoder next to llmlab's own."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: positions

        Attention treats its inputs as a set: shuffle the tokens and each output is shuffled the same way, nothing
        more. Word order has to be put in. You write the three ways the course covers:

        1. `sinusoidal(T, C)`: the original Transformer's fixed vectors, added to the token embeddings,
        2. `rope(x, positions)`: rotary embeddings (Llama and most models since), which rotate queries and keys,
        3. `alibi_bias(n_head, T)`: ALiBi (Bloom), a penalty on the scores that grows with distance.

        Then your `rope` replaces llmlab's in every block of a small Llama-style decoder, which trains.

        Open `positions.py` next to this notebook, fill in a body, save, and rerun the check cell under it.
        `llmlab labs check positions` runs the same checks in a terminal. (About 35 minutes.)
        '''),
    setup("positions"),
    md(r'''
        ## 1. Sinusoidal positions

        Position $p$ gets a vector whose channel pair $i$ is $(\sin(p\,\omega_i), \cos(p\,\omega_i))$ with
        $\omega_i = 10000^{-2i/C}$: fast-turning pairs tell neighbours apart, slow ones tell far-apart positions
        apart, and a shift by $k$ positions is a fixed rotation of each pair.
        '''),
    check_cell("positions", "sinusoidal"),
    md(r'''
        ## 2. RoPE

        RoPE rotates each query and key by an angle proportional to its position, one angle per channel pair. The
        dot product of two rotated vectors depends only on the *difference* of their angles, so
        $q_m \cdot k_n$ depends on $m - n$ alone: relative position, for free, with nothing to learn. Llama (and
        llmlab) pair channel $i$ with channel $i + D/2$:

            rotate_half(x) = cat(-x[..., D/2:], x[..., :D/2]);   rope(x) = x * cos + rotate_half(x) * sin
        '''),
    check_cell("positions", "rope"),
    md('''
        ## 3. ALiBi

        ALiBi adds nothing to the embeddings. It subtracts from each attention score a penalty proportional to the
        distance between query and key, with a different slope per head: steep heads look nearby, gentle ones far.
        '''),
    code('''
        from llmlab.models.layers import alibi_slopes

        print("slopes for 8 heads:", [round(s, 4) for s in alibi_slopes(8).tolist()])
        '''),
    check_cell("positions", "alibi_bias"),
    md('''
        ## 4. Your RoPE inside llmlab's decoder

        Every block of a small Llama-style llmlab decoder rotates its queries and keys with your `rope` (the rest
        of attention stays llmlab's). It trains next to an unchanged copy, from the same weights on the same
        batches: right rotations give the same curve.
        '''),
    code('''
        from llmlab.labs.attention.solution import attention as llmlab_attention
        from llmlab.labs.experiments import compare_training, plot_runs, use_attention

        runs = compare_training({"llmlab's RoPE": lambda model: model,
                                 "your RoPE": lambda model: use_attention(model, llmlab_attention, rotate=lab.rope)},
                                preset="llama-tiny", steps=100)
        gap = max(abs(a - b) for a, b in zip(runs[0].losses, runs[1].losses))
        print(f"largest gap between the two loss curves: {gap:.2g} nats")
        plot_runs(runs, "llmlab's Llama-style decoder with your RoPE");
        '''),
    md('''
        ## Done?

        `check("positions")` runs every check. `llmlab compare positions` trains learned, sinusoidal, RoPE, ALiBi
        and no positions at all side by side, and tests them at twice the training length. Next on the path:
        `llmlab labs start gpt-to-llama`.
        '''),
    check_cell("positions"),
]
