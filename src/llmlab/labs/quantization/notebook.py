"""Lab: quantization, the notebook: integer grids, absmax and zero points, groups, 2:4 sparsity, each with its
checks, then the learner's functions compressing a freshly trained llmlab decoder, measured by held-out loss."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: quantization and sparsity

        A model's weights are float32 (4 bytes) or bf16 (2 bytes). Stored as int8 or int4 with a few float scales,
        a model takes 2 to 8 times less memory, and memory bandwidth is what limits generation. You write:

        1. `absmax_quantize`: symmetric int8, one scale per output row,
        2. `zero_point_quantize`: asymmetric, for weights not centred on zero,
        3. `group_quantize`: int4 with a scale per group of 32 inputs, as GGUF and GPTQ store weights,
        4. `prune_2_4`: half the weights set to zero in the 2:4 pattern that GPU tensor cores can skip.

        Then your functions compress a small llmlab decoder trained a moment before, and the held-out loss shows
        what each costs.

        Open `quantization.py` next to this notebook, fill in a body, save, and rerun the check cell under it.
        `llmlab labs check quantization` runs the same checks in a terminal. (About 35 minutes; it follows the
        AIMS workshop's quantisation and sparsity lab.)
        '''),
    setup("quantization"),
    md(r'''
        ## 1. Absmax

        Map each row's range $[-\max|w|, \max|w|]$ onto the integers $-127..127$: scale $s = \max|w| / 127$,
        codes $= \text{round}(w / s)$, and $w \approx \text{codes} \cdot s$. The error of a weight is at most
        $s / 2$, so one huge weight in a row makes every other weight in it coarse: hence a scale per row,
        not one for the whole matrix.
        '''),
    check_cell("quantization", "absmax_quantize"),
    md('''
        ## 2. A zero point

        If a row's weights lie in [-0.1, 0.5], absmax wastes the codes below -0.1. An asymmetric grid spends all
        2^bits codes on [lo, hi] and shifts them by a zero point, the code that stands for 0.0.
        '''),
    check_cell("quantization", "zero_point_quantize"),
    md('''
        ## 3. Groups

        At 4 bits there are only 15 levels, so a single scale per row of 576 or 4096 weights is too coarse.
        Giving each group of 32 consecutive inputs its own scale costs one float per 32 weights (an extra half
        bit per weight in 16-bit scales) and cuts the error a lot.
        '''),
    check_cell("quantization", "group_quantize"),
    md('''
        ## 4. 2:4 sparsity

        Of every 4 consecutive weights, keep the 2 of largest magnitude. Half the weights are zero, in a pattern
        regular enough for hardware to skip.
        '''),
    check_cell("quantization", "prune_2_4"),
    md('''
        ## 5. Your functions on an llmlab model

        A small byte-level decoder trains for a few seconds on Python's source code. Then every linear weight in
        its blocks is replaced by your quantised (or pruned) version, and the held-out loss is measured again.
        Its rows have only 64 or 256 inputs, so groups of 32 help little here; on real models, with rows of
        thousands of inputs, they are what makes 4 bits usable (`llmlab quantize compare` shows it).
        '''),
    code('''
        from llmlab.labs.experiments import compare_training, held_out_loss, with_weights
        from llmlab.quantize.rtn import fake_quantize

        (run,) = compare_training({"trained": lambda model: model}, steps=100)
        methods = {
            "float32": lambda w: w,
            "your int8 absmax": lambda w: (lambda codes, scale: codes * scale)(*lab.absmax_quantize(w, 8)),
            "your int4, groups of 32": lambda w: lab.group_quantize(w, 4, 32),
            "llmlab's int4, groups of 32": lambda w: fake_quantize(w, 4, group_size=32),
            "your int4, one scale per row": lambda w: (lambda codes, scale: codes * scale)(*lab.absmax_quantize(w, 4)),
            "your 2:4 pruning": lab.prune_2_4,
        }
        for label, fn in methods.items():
            print(f"{label:>30}: held-out loss {held_out_loss(with_weights(run.model, fn)):.4f}")
        '''),
    md('''
        ## Done?

        `check("quantization")` runs every check. `llmlab quantize compare` runs every method llmlab has (NF4,
        GPTQ, AWQ, W8A8) on a real model and tables size, perplexity and speed. Next on the path:
        `llmlab labs start sampling`.
        '''),
    check_cell("quantization"),
]
