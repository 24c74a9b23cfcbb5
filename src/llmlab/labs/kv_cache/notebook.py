"""Lab: kv-cache, the notebook: why a cache, its layout, the checks, then the learner's cache decoding with an
llmlab decoder: the same tokens as without it, and the time per token of both."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: the KV cache

        A decoder generates one token at a time, and every new token attends to all the tokens before it. Without
        a cache, each step runs the model over the whole sequence again, so step n costs about n times one
        token's work. Yet the keys and values of earlier tokens never change: keep them, and each step runs only
        the newest token. You write:

        1. `KVCache`: per layer, the keys and values so far, in the interface llmlab's decoder calls,
        2. `greedy_decode(model, idx, n, use_cache)`: generation with and without it.

        Then you time both: the same tokens, at a fraction of the cost per token.

        Open `kv-cache.py` next to this notebook, fill in a body, save, and rerun the check cell under it.
        `llmlab labs check kv-cache` runs the same checks in a terminal. (About 35 minutes; it follows week 3.2
        of the 8-week course.)
        '''),
    setup("kv-cache"),
    md('''
        ## 1. The cache

        llmlab's `Attention` calls `k, v = cache.update(layer, k, v)` with the keys and values of the new positions,
        (B, n_kv_head, T, head_dim), and attends over what it returns: every position so far. After the last layer
        the model calls `cache.advance(T)` once. `pos` must not move inside `update`: all layers write the same
        positions during one forward pass.

        Memory: 2 (keys and values) x n_layer x B x n_kv_head x max_len x head_dim numbers. Grouped-query
        attention (fewer key/value heads than query heads) is there to shrink exactly this.
        '''),
    code('''
        from llmlab.models import get_preset

        c = get_preset("smollm2-135m")
        numbers = 2 * c.n_layer * 1 * c.n_kv_head * 8192 * c.head_dim
        print(f"SmolLM2-135M, 8192 positions: {numbers * 2 / 2**20:.0f} MiB of cache in bf16 "
              f"({c.n_kv_head} key/value heads for {c.n_head} query heads)")
        '''),
    check_cell("kv-cache", "KVCache"),
    md('''
        ## 2. Decoding with it

        With the cache, run the prompt once (`model(idx, kv_cache=cache)` fills every layer's cache), then feed only
        the newest token each step. Without it, feed the whole sequence each step. Greedy decoding picks the argmax
        of the last position's logits, so both ways must give exactly the same tokens.
        '''),
    check_cell("kv-cache", "greedy_decode"),
    md('''
        ## 3. Your cache, timed

        A 4-block llmlab decoder (untrained: only the time matters here) continues a 16-token prompt by 200
        tokens with your `greedy_decode`, with and without your cache.
        '''),
    code('''
        import time

        import matplotlib.pyplot as plt
        from llmlab.models import Transformer

        torch.manual_seed(0)
        model = Transformer(get_preset("llama-tiny", vocab_size=256, seq_len=256)).eval()
        prompt = torch.randint(0, 256, (1, 16))
        seconds, tokens = {}, {}
        for use_cache in (False, True):
            start = time.perf_counter()
            tokens[use_cache] = lab.greedy_decode(model, prompt, 200, use_cache=use_cache)
            seconds[use_cache] = time.perf_counter() - start
        print("same tokens with and without the cache:", torch.equal(tokens[True], tokens[False]))
        for use_cache, s in seconds.items():
            print(f"use_cache={use_cache}: {1000 * s / 200:.2f} ms per token")
        plt.bar(["without cache", "with cache"], [1000 * seconds[False] / 200, 1000 * seconds[True] / 200])
        plt.ylabel("ms per token (200 tokens after a 16-token prompt)")
        plt.title(f"your KV cache: {seconds[False] / seconds[True]:.1f}x faster");
        '''),
    md('''
        ## Done?

        `check("kv-cache")` runs every check. `llmlab bench kv-cache` measures llmlab's own cache over longer
        runs; `llmlab serve` goes further with a paged cache shared by many requests. Next on the path:
        `llmlab labs start training-loop`.
        '''),
    check_cell("kv-cache"),
]
