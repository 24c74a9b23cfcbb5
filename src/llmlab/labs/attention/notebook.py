"""Lab: attention, the notebook: the idea, the checks after each part, and the learner's attention training
inside llmlab's decoder next to llmlab's own."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: attention

        Attention is how a transformer lets each position gather information from the others. In this lab you
        write it three times, each building on the last:

        1. `attention(q, k, v, causal=True)`: scaled dot-product attention with the causal mask,
        2. `cross_attention(q, k, v)`: queries from one sequence, keys and values from another,
        3. `MultiHeadAttention`: the layer a decoder uses, with projections and heads.

        Then your `attention` replaces llmlab's inside a real decoder, which trains for a few seconds.

        **How to work.** Open `attention.py` (next to this notebook) in an editor, fill in a body, save, and rerun
        the check cell below it. The file is reloaded automatically. A ✗ says what looks wrong. The same checks
        run in a terminal with `llmlab labs check attention`. If you are stuck, `llmlab labs solution attention`
        prints llmlab's own code. (About 45 minutes; it follows AMD's lab 06 and weeks 2.1 and 3.1 of the
        8-week course.)
        '''),
    setup("attention"),
    md(r'''
        ## 1. Scaled dot-product attention

        Each position has a query $q_i$, a key $k_j$ and a value $v_j$, all vectors of `head_dim` = $D$ numbers.
        Query $i$ scores every key with a dot product, turns the scores into weights with a softmax over the keys,
        and returns the weighted average of the values:

        $$\text{attention}(Q, K, V) = \text{softmax}\left(\frac{Q K^\top}{\sqrt{D}}\right) V$$

        With batches and heads, `q @ k.transpose(-2, -1)` gives the scores as (B, H, T, T): row $i$ holds query
        $i$'s score for each key. **Why divide by $\sqrt{D}$?** A dot product of $D$ random numbers of variance 1
        has variance $D$, so without the scale the scores grow with the head size and the softmax saturates into
        a one-hot choice, with almost no gradient. The cell below shows it.
        '''),
    code('''
        q, k = torch.randn(10_000, 64), torch.randn(10_000, 64)
        scores = (q * k).sum(-1)
        print(f"variance of q.k: {scores.var():.1f}, of q.k / sqrt(64): {(scores / 8).var():.2f}")
        '''),
    md('''
        **The causal mask.** A decoder predicts token $i + 1$ from tokens $0..i$, so query $i$ may only look at keys
        $j \\le i$. Set the scores of the future keys to $-\\infty$ *before* the softmax: they get weight
        $e^{-\\infty} = 0$ and the remaining weights still sum to 1. `torch.ones(T, T, dtype=torch.bool).tril()`
        is True exactly where a query may look. Mind large scores too: `torch.softmax` subtracts each row's maximum
        before `exp`, a hand-written one must do the same.

        Fill in `attention` in `attention.py`, then run:
        '''),
    check_cell("attention", "attention"),
    md('''
        ## 2. Cross-attention

        In an encoder-decoder (T5, the original Transformer) or a vision-language model, the queries come from the
        text being written and the keys and values from somewhere else: the encoded source sentence, or image
        patches. The formula is the same; only now there are $T$ queries and $S$ keys, so the scores are
        (B, H, T, S), and there is no causal mask: the source is there in full from the start.
        '''),
    check_cell("attention", "cross_attention"),
    md('''
        ## 3. Multi-head attention

        A layer of attention sees inputs x of shape (B, T, C). It projects them to queries, keys and values
        (`q_proj`, `k_proj`, `v_proj`, each C -> C), splits the C channels into `n_head` heads of
        `head_dim = C // n_head` channels, attends in every head at once, puts the heads back side by side, and
        mixes them with `o_proj`:

            (B, T, C) -view-> (B, T, H, D) -transpose(1, 2)-> (B, H, T, D) -attention-> (B, H, T, D)
                      -transpose(1, 2)-> (B, T, H, D) -reshape-> (B, T, C) -o_proj-> (B, T, C)

        The check copies your four layers' weights into `torch.nn.MultiheadAttention` and compares.
        '''),
    check_cell("attention", "MultiHeadAttention"),
    md('''
        ## 4. Your attention inside llmlab's decoder

        `use_attention(model, fn)` makes every block of an llmlab `Transformer` call `fn(q, k, v, causal=True)`
        where it would call its own attention; the projections stay llmlab's. Two copies of a small byte-level
        decoder start from the same weights and train on the same batches of Python's own source code: one with
        llmlab's attention, one with yours. If yours is right, the two loss curves lie on top of each other.
        (Try it with a bug: remove the scale, rerun the cell, and watch the curves part.)
        '''),
    code('''
        from llmlab.labs.experiments import compare_training, plot_runs, use_attention

        runs = compare_training({"llmlab's attention": lambda model: model,
                                 "your attention": lambda model: use_attention(model, lab.attention)}, steps=100)
        gap = max(abs(a - b) for a, b in zip(runs[0].losses, runs[1].losses))
        print(f"largest gap between the two loss curves: {gap:.2g} nats")
        plot_runs(runs, "llmlab's decoder with your attention");
        '''),
    md('''
        ## Done?

        `check("attention")` runs every check at once. Next on the path: `llmlab labs start norms`, where you
        write the normalisations and activations that sit around this attention in a block.
        '''),
    check_cell("attention"),
]
