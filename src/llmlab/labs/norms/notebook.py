"""Lab: norms, the notebook: the idea of each piece, the checks after each part, and the learner's RMSNorm
training inside llmlab's Llama-style decoder next to llmlab's own."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: norms and activations

        Around the attention of a transformer block sit normalisations and an MLP. In this lab you write:

        1. `LayerNorm` (GPT-2, BERT) and `RMSNorm` (Llama),
        2. the activations `gelu` and `silu`, and Llama's gated MLP `SwiGLU`,
        3. the two ways to place a norm around a residual branch: `pre_norm` and `post_norm`.

        Then your `RMSNorm` replaces llmlab's in every block of a small Llama-style decoder, which trains for a
        few seconds next to an unchanged copy.

        Open `norms.py` next to this notebook, fill in a body, save, and rerun the check cell under it.
        `llmlab labs check norms` runs the same checks in a terminal; `llmlab labs solution norms` shows llmlab's
        code. (About 40 minutes; it follows AMD's labs 05a and 05b.)
        '''),
    setup("norms"),
    md(r'''
        ## 1. LayerNorm and RMSNorm

        Activations in a deep network drift in scale from layer to layer. A norm rescales each token's feature
        vector $x \in \mathbb{R}^C$ on its own:

        $$\text{LayerNorm}(x) = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} \cdot w + b, \qquad
          \mu = \tfrac{1}{C}\textstyle\sum_i x_i,\quad \sigma^2 = \tfrac{1}{C}\sum_i (x_i - \mu)^2$$

        Note the *biased* variance (divide by $C$, not $C - 1$): `x.var()` is unbiased by default.
        RMSNorm (Zhang and Sennrich, 2019) drops the centring and the bias, which is cheaper and works as well:

        $$\text{RMSNorm}(x) = \frac{x}{\sqrt{\tfrac{1}{C}\sum_i x_i^2 + \epsilon}} \cdot w$$

        $\epsilon$ goes *inside* the square root; it matters when $x$ is tiny. `weight` starts at ones and
        `bias` at zeros, so a fresh norm only normalises; both are `nn.Parameter`s, so they train.
        '''),
    check_cell("norms", "LayerNorm"),
    check_cell("norms", "RMSNorm"),
    md(r'''
        ## 2. GELU, SiLU and SwiGLU

        GELU weights $x$ by the chance that a standard normal variable is below it, $x\,\Phi(x)$; GPT-2 uses a
        tanh approximation of it, either is accepted here. SiLU is $x\,\sigma(x)$. Llama's MLP is gated: one
        projection, through SiLU, decides how much of another passes:

        $$\text{SwiGLU}(x) = W_{down}\big(\text{silu}(W_{gate}\,x) \odot W_{up}\,x\big)$$
        '''),
    code('''
        x = torch.linspace(-4, 4, 9)
        print("x      ", x.tolist())
        print("relu   ", torch.relu(x).tolist())
        print("gelu   ", [round(v, 3) for v in torch.nn.functional.gelu(x).tolist()])
        '''),
    check_cell("norms", "gelu"),
    check_cell("norms", "silu"),
    check_cell("norms", "SwiGLU"),
    md('''
        ## 3. Pre-LN and Post-LN

        The original Transformer normalised *after* adding a branch to the residual stream: `norm(x + f(x))`.
        GPT-2 and every model since normalise the branch's *input* and leave the stream alone: `x + f(norm(x))`.
        With Post-LN the gradients near the output are much larger than near the input, so it needs a learning
        rate warmup to train at all; `llmlab compare norms` shows it on a real run.
        '''),
    check_cell("norms", "pre_norm"),
    check_cell("norms", "post_norm"),
    md('''
        ## 4. Your RMSNorm inside llmlab's decoder

        `use_norm(model, lab.RMSNorm)` replaces every RMSNorm of a Llama-style llmlab `Transformer` with yours
        (keeping the weights). Both copies start from the same weights and see the same batches of Python source
        code: if your norm is right, the loss curves lie on top of each other.
        '''),
    code('''
        from llmlab.labs.experiments import compare_training, plot_runs, use_norm

        runs = compare_training({"llmlab's RMSNorm": lambda model: model,
                                 "your RMSNorm": lambda model: use_norm(model, lab.RMSNorm)},
                                preset="llama-tiny", steps=100)
        gap = max(abs(a - b) for a, b in zip(runs[0].losses, runs[1].losses))
        print(f"largest gap between the two loss curves: {gap:.2g} nats")
        plot_runs(runs, "llmlab's Llama-style decoder with your RMSNorm");
        '''),
    md('''
        ## Done?

        `check("norms")` runs every check. Next on the path: `llmlab labs start positions`.
        '''),
    check_cell("norms"),
]
