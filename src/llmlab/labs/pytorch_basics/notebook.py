"""Lab: pytorch-basics, the notebook: shapes, broadcasting, matmul and autograd, each followed by its check,
ending with the learner's softmax inside the attention of an llmlab decoder that trains."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: PyTorch basics

        Everything in llmlab is tensors: shapes, broadcasting, matrix products and automatic gradients. In this lab
        you write five small functions without Python loops:

        `pairwise_sq_distances`, `normalize_rows`, `linear`, `softmax` and `mse_grad` (a gradient by hand).

        At the end your `softmax` becomes the softmax inside the attention of a real llmlab decoder, which trains.

        Open `pytorch-basics.py` next to this notebook, fill in a body, save, and rerun the check cell under it.
        `llmlab labs check pytorch-basics` runs the same checks in a terminal. (About 30 minutes; it follows
        AMD's labs 02 and 03 and week 1.2 of the 8-week course.)
        '''),
    setup("pytorch-basics"),
    md('''
        ## 1. Shapes and broadcasting

        Two shapes broadcast when, compared from the right, each pair of sizes is equal or one of them is 1; a
        size-1 axis is stretched to match. `x[:, None, :]` (or `x.unsqueeze(1)`) inserts such an axis:
        (N, D) becomes (N, 1, D), and against y's (1, M, D) the difference is (N, M, D).
        '''),
    code('''
        x, y = torch.randn(5, 3), torch.randn(2, 3)
        print((x[:, None, :] - y[None, :, :]).shape)  # (5, 2, 3)
        print(x.norm(dim=1).shape, x.norm(dim=1, keepdim=True).shape)  # keepdim keeps the axis as size 1
        '''),
    check_cell("pytorch-basics", "pairwise_sq_distances"),
    check_cell("pytorch-basics", "normalize_rows"),
    md('''
        ## 2. Matrix products

        `a @ b` multiplies the last axis of `a` with the second-to-last of `b`; leading axes are batch axes
        and broadcast. `nn.Linear(in, out)` stores its weight as (out, in), so it computes `x @ weight.T + bias`.
        '''),
    check_cell("pytorch-basics", "linear"),
    md('''
        ## 3. A stable softmax

        softmax(x)_i = exp(x_i) / sum_j exp(x_j). `exp(1000)` is `inf` in float32, but subtracting the largest
        entry first changes nothing mathematically (the factor exp(-max) cancels) and keeps every exp at most 1.
        '''),
    code('''
        x = torch.tensor([1000.0, 999.0])
        print("naive:", x.exp() / x.exp().sum(), " shifted:", (x - x.max()).exp() / (x - x.max()).exp().sum())
        '''),
    check_cell("pytorch-basics", "softmax"),
    md('''
        ## 4. Gradients, by hand and by autograd

        For a loss L(w) = mean((x @ w - y)^2), the chain rule gives dL/dw = (2 / N) x^T (x @ w - y). Autograd
        finds the same by recording the operations: set `requires_grad=True`, compute the loss, call `backward()`.
        '''),
    code('''
        w = torch.zeros(3, requires_grad=True)
        x, y = torch.randn(10, 3), torch.randn(10)
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        print("autograd:", w.grad)
        '''),
    check_cell("pytorch-basics", "mse_grad"),
    md('''
        ## 5. Your softmax inside llmlab's decoder

        The attention of every block of a small llmlab decoder is rebuilt from your functions: its scores go
        through *your* `softmax`. It trains next to an unchanged copy from the same weights on the same batches;
        if your softmax is right, the curves coincide.
        '''),
    code('''
        import math

        from llmlab.labs.experiments import compare_training, plot_runs, use_attention


        def attention_with_your_softmax(q, k, v, causal=True):
            T = q.shape[-2]
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, T)
            scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
            return lab.softmax(scores, dim=-1) @ v


        runs = compare_training({"llmlab": lambda model: model,
                                 "your softmax": lambda model: use_attention(model, attention_with_your_softmax)},
                                steps=100)
        plot_runs(runs, "llmlab's decoder with your softmax in its attention");
        '''),
    md('''
        ## Done?

        `check("pytorch-basics")` runs every check. Next on the path: `llmlab labs start modules`.
        '''),
    check_cell("pytorch-basics"),
]
