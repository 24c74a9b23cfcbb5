"""Lab: ngram-and-backprop, the notebook: counting n-grams, add-k smoothing, nll and sampling; then the chain
rule through GPT-2's MLP block by hand; then an llmlab decoder trained with the learner's backward passes,
next to autograd, against the learner's n-gram models on the same text."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: n-grams and backprop by hand

        Two foundations under every language model. First the oldest language model there is: predict the next
        character by *counting* what followed the same few characters in the training text. Then the algorithm
        that trains every neural one: backpropagation, written by hand for the MLP block of a GPT-2 layer.

        1. `count_ngrams` and `NgramModel`: counts, add-k smoothing, the negative log-likelihood, sampling,
        2. `linear_backward`, `gelu_backward`, `layernorm_backward`, and `mlp_block_backward` built from them.

        At the end, an llmlab decoder trains on Python's source code with *your* gradients in every LayerNorm and
        MLP, next to the same decoder on torch's autograd; and your n-gram models score the same text.

        Open `ngram-and-backprop.py` next to this notebook, fill in a body, save, and rerun the check cell under
        it. `llmlab labs check ngram-and-backprop` runs the same checks in a terminal. (About 60 minutes; it
        follows week 2.2 of the 8-week course.)
        '''),
    setup("ngram-and-backprop"),
    md(r'''
        ## 1. Counting

        An order-$n$ model predicts each character from the $n - 1$ before it. Training is counting: how often
        does each string of $n$ characters occur? A text's first characters have fewer than $n - 1$ before them,
        so each text is padded on the left with $n - 1$ `BOS` ("start of text") characters: for $n = 3$, `"hi"`
        is read as `BOS BOS h i`, and the counted 3-grams are `BOS BOS h` and `BOS h i`, one per character.
        BOS is only ever context; nothing predicts it.
        '''),
    check_cell("ngram-and-backprop", "count_ngrams"),
    md(r'''
        ## 2. The model: smoothing, likelihood, sampling

        With $c(h\,w)$ the count of context $h$ followed by $w$, and $c(h) = \sum_w c(h\,w)$, the counts alone
        would give $P(w \mid h) = c(h\,w) / c(h)$: probability 0 for anything training never showed after $h$,
        and an infinite loss the first time it happens. **Add-k smoothing** pretends every character was seen
        $k$ more times:

        $$P(w \mid h) = \frac{c(h\,w) + k}{c(h) + k V}$$

        with $V$ the vocabulary size (the training characters plus `UNK`, which stands for any character never
        seen). The model is scored by its **negative log-likelihood** per character, $-\frac{1}{N}\sum_i
        \ln P(x_i \mid \text{the } n - 1 \text{ before it})$ in nats: the same cross-entropy a neural model
        trains on. Its exponential is the perplexity: guessing uniformly over $V$ characters gives $\ln V$.
        '''),
    code('''
        import math

        for V in (2, 27, 100):
            print(f"a uniform guess over {V:>3} characters: nll {math.log(V):.2f} nats, perplexity {V}")
        '''),
    md('''
        **Sampling** runs the model forwards: start from n - 1 BOS, draw a character with the probabilities as
        weights, append it, and draw the next from the new last n - 1 characters.
        '''),
    check_cell("ngram-and-backprop", "NgramModel"),
    md(r'''
        ## 3. Backprop, one piece at a time

        The chain rule: if $y = f(x)$ and the loss $L$ depends on $y$, then $\partial L / \partial x$ is
        $\partial L / \partial y$ (`dout`) pushed back through $f$'s derivative. Each piece's backward takes
        `dout` with its output's shape and returns gradients with its inputs' shapes. With weights stored
        (in, out), as in llmlab's `fundamentals.backprop`:

        - **linear**, $y = x w + b$: $dx = dout\,w^\top$, $dw = x^\top dout$, $db = \sum dout$, where $dw$ and
          $db$ sum over every batch and time position (they all used the same $w$ and $b$);
        - **GELU**, $y = x\,\Phi(x)$: $dx = dout \cdot (\Phi(x) + x\,\varphi(x))$;
        - **LayerNorm**, $y = \hat{x} w + b$ with $\hat{x} = (x - \mu)\,r$, $r = 1 / \sqrt{\sigma^2 +
          \epsilon}$: $dw = \sum dout\,\hat{x}$, $db = \sum dout$, and with $d\hat{x} = dout \cdot w$,
          $$dx = r\left(d\hat{x} - \operatorname{mean}(d\hat{x}) - \hat{x}\,\operatorname{mean}(d\hat{x}\,
          \hat{x})\right)$$
          where the two means are the gradient's path through $\mu$ and through $\sigma^2$: both depend on $x$.

        Every check compares your gradients with `torch.autograd` in float64. A finite difference is the
        slow way to see the same number:
        '''),
    code('''
        import torch.nn.functional as F

        x = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
        F.gelu(x).backward()
        h = 1e-6
        numeric = (F.gelu(torch.tensor(0.7 + h)) - F.gelu(torch.tensor(0.7 - h))) / (2 * h)
        print(f"GELU'(0.7): autograd {x.grad.item():.6f}, finite difference {numeric.item():.6f}")
        '''),
    check_cell("ngram-and-backprop", "linear_backward"),
    check_cell("ngram-and-backprop", "gelu_backward"),
    check_cell("ngram-and-backprop", "layernorm_backward"),
    md(r'''
        ## 4. The whole block

        GPT-2's MLP block is $y = x + \mathrm{gelu}(\mathrm{ln}(x)\,w_1 + b_1)\,w_2 + b_2$. Run it forwards,
        keeping $u = \mathrm{ln}(x)$, $h = u\,w_1 + b_1$ and $a = \mathrm{gelu}(h)$; then backwards, last piece
        first: proj (input $a$), GELU (at $h$), fc (input $u$), LayerNorm (at $x$). The residual adds one more
        path: $x$ reaches $y$ directly, so `dout` itself is added to $dx$.
        '''),
    check_cell("ngram-and-backprop", "mlp_block_backward"),
    md('''
        ## 5. Your gradients train an llmlab decoder

        `torch.autograd.Function` lets a forward come with a backward you write. Below, every LayerNorm and every
        MLP of a small llmlab decoder runs llmlab's forward (with the exact GELU) and *your* backward. It trains
        on Python's source code next to the same decoder on torch's autograd, from the same weights on the same
        batches: right gradients give the same curve. Your n-gram models, trained on the same bytes, are the
        dotted lines: each the held-out loss of one order.
        '''),
    code('''
        from llmlab.labs.experiments import compare_training, corpus_bytes, plot_runs, use_module


        class YourMLP(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, w1, b1, w2, b2):  # nn.Linear's weights: (out, in)
                h = F.linear(x, w1, b1)
                a = F.gelu(h)
                ctx.save_for_backward(x, w1, w2, h, a)
                return F.linear(a, w2, b2)

            @staticmethod
            def backward(ctx, dout):
                x, w1, w2, h, a = ctx.saved_tensors
                da, dw2, db2 = lab.linear_backward(dout, a, w2.T)  # your weights are (in, out)
                dx, dw1, db1 = lab.linear_backward(lab.gelu_backward(da, h), x, w1.T)
                return dx, dw1.T, db1, dw2.T, db2


        class YourLayerNorm(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, w, b, eps):
                ctx.save_for_backward(x, w)
                ctx.eps = eps
                return F.layer_norm(x, (x.shape[-1],), w, b, eps)

            @staticmethod
            def backward(ctx, dout):
                x, w = ctx.saved_tensors
                return *lab.layernorm_backward(dout, x, w, ctx.eps), None  # no gradient for eps


        class MLP(torch.nn.Module):  # llmlab's GeluMLP, its weights and names; the exact GELU
            def __init__(self, old, yours):
                super().__init__()
                self.up_proj, self.down_proj, self.yours = old.up_proj, old.down_proj, yours

            def forward(self, x):
                if self.yours:
                    return YourMLP.apply(x, self.up_proj.weight, self.up_proj.bias, self.down_proj.weight,
                                         self.down_proj.bias)
                return self.down_proj(F.gelu(self.up_proj(x)))


        class Norm(torch.nn.Module):  # llmlab's LayerNorm, its weights and names
            def __init__(self, old, yours):
                super().__init__()
                self.weight, self.bias, self.eps, self.yours = old.weight, old.bias, old.eps, yours

            def forward(self, x):
                if self.yours:
                    return YourLayerNorm.apply(x, self.weight, self.bias, self.eps)
                return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


        def backward_by(yours):
            def edit(model):
                use_module(model, "GeluMLP", lambda old: MLP(old, yours))
                use_module(model, "LayerNorm", lambda old: Norm(old, yours))
            return edit
        '''),
    code('''
        runs = compare_training({"torch's autograd": backward_by(False), "your backward passes": backward_by(True)},
                                steps=100)
        gap = max(abs(a - b) for a, b in zip(runs[0].losses, runs[1].losses))
        print(f"largest gap between the two loss curves: {gap:.2g} nats")

        text = bytes(corpus_bytes("stdlib/").tolist()).decode("latin-1")  # one character per byte, as the decoder
        split = int(0.9 * len(text))  # the decoder's training bytes, then its held-out tenth
        ngram_nll = {n: lab.NgramModel([text[:split]], n, k=0.01).nll([text[split:split + 20_000]])
                     for n in (1, 2, 3, 4, 5)}
        for n, value in ngram_nll.items():
            print(f"{n}-gram (add-0.01): held-out {value:.3f} nats per byte")
        ax = plot_runs(runs, "an llmlab decoder on your gradients; your n-grams dotted").axes[0]
        for n, value in ngram_nll.items():  # labels left and right in turn, so close lines stay readable
            ax.axhline(value, color="gray", linestyle=":", linewidth=1)
            ax.annotate(f"{n}-gram", (1 if n % 2 == 0 else len(runs[0].losses), value), fontsize=8,
                        ha="left" if n % 2 == 0 else "right", va="bottom")
        '''),
    md('''
        The short run stops above the best n-gram; trained longer, the decoder goes well below them all
        (`llmlab fundamentals ngram` draws that comparison, with Kneser-Ney smoothing too). Past order 3 or 4,
        add-k gets worse on held-out text: most long contexts were seen once or never, and k hands their mass
        to every character alike.

        ## Done?

        `check("ngram-and-backprop")` runs every check. `llmlab fundamentals backprop` goes through a whole
        block, attention included, the same way. Next on the path: `llmlab labs start bpe`.
        '''),
    check_cell("ngram-and-backprop"),
]
