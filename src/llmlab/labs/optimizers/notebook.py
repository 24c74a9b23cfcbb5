"""Lab: optimizers, the notebook: each update rule with its check, the first three in a 2-D valley, then the
learner's optimizers racing each other on a small llmlab decoder."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: optimizers

        An optimizer turns gradients into steps. The gradient says which way is downhill *here*; how far to go,
        and how much to trust the last few gradients, is the optimizer's choice, and it decides how fast a model
        trains. You write five, each a `torch.optim.Optimizer`:

        1. `SGD`: plain steps, momentum, and Nesterov's look-ahead,
        2. `Adam`: a step per weight, scaled by the gradient's running size,
        3. `Lion`: the sign of a momentum, found by a program search,
        4. `newton_schulz` and `Muon`: momentum whose update of each weight matrix is orthogonalised.

        Then they race each other, training the same small llmlab decoder.

        Open `optimizers.py` next to this notebook, fill in a `step`, save, and rerun the check cell under it.
        `llmlab labs check optimizers` runs the same checks in a terminal; `llmlab labs solution optimizers` shows
        llmlab's code. (About 50 minutes; it follows the AIMS workshop's optimizers lab.)
        '''),
    setup("optimizers"),
    md('''
        ## 1. SGD and momentum

        `torch.optim.Optimizer` keeps `self.param_groups`, a list of dicts, each with its parameters and its own
        settings (`lr`, ...), and `self.state[p]`, a dict per parameter for what the rule remembers. A schedule
        changes `group["lr"]` between steps, so `step()` reads it from the group every time.

        Plain SGD steps against the gradient: `p -= lr * g`. In a long narrow valley that zig-zags across the
        steep walls and crawls along the floor. **Momentum** keeps a velocity `b = mu * b + g`: the zig-zags
        cancel, the steady direction adds up (to about 1 / (1 - mu) times the gradient). **Nesterov** steps by
        `g + mu * b`, as if it had already moved by the momentum. Weight decay in `torch.optim.SGD` is L2:
        `weight_decay * p` is added to the gradient.
        '''),
    check_cell("optimizers", "SGD"),
    md(r'''
        ## 2. Adam

        Adam (Kingma & Ba 2015) keeps two running averages per weight, of the gradient ($m$) and of its square
        ($v$), and steps by $m / \sqrt{v}$: every weight moves about `lr` per step, whatever its gradient's scale.
        Both averages start at zero and are too small early on by a factor $1 - \beta^t$, which the bias
        correction divides out. `eps` (1e-8) only guards the division: it goes *outside* the square root.
        '''),
    check_cell("optimizers", "Adam"),
    md('''
        ## 3. Lion

        Lion (Chen et al. 2023) was found by a computer searching over programs of update rules. It keeps one
        momentum and steps by its *sign*: every entry moves by exactly `lr`, so its lr is 3-10x smaller than
        Adam's. It uses two betas: the step mixes the old momentum with the new gradient by `beta1` (0.9), the
        momentum it keeps by `beta2` (0.99), so the step reacts faster than the memory. One state tensor
        instead of Adam's two.
        '''),
    check_cell("optimizers", "Lion"),
    md('''
        **Three optimizers in a valley.** The loss 0.5 (x² + 30 y²) is a valley 30 times steeper across than
        along. Plain SGD needs a small lr not to bounce off the walls, so it crawls; momentum gathers speed along
        the floor; Adam and Lion step by about `lr` in each coordinate, whatever the slope (Lion by exactly
        `lr`, so without a decaying lr it ends up hopping around the minimum).
        '''),
    code('''
        import matplotlib.pyplot as plt

        def valley(make, steps=60):
            p = torch.nn.Parameter(torch.tensor([-4.0, 1.0]))
            optimizer, path = make([p]), [p.detach().clone()]
            for _ in range(steps):
                loss = 0.5 * (p[0] ** 2 + 30 * p[1] ** 2)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                path.append(p.detach().clone())
            return torch.stack(path)  # (steps + 1, 2)

        x, y = torch.meshgrid(torch.linspace(-4.5, 1, 100), torch.linspace(-1.2, 1.2, 100), indexing="xy")
        plt.figure(figsize=(9, 3.2))
        plt.contour(x, y, 0.5 * (x ** 2 + 30 * y ** 2), levels=20, colors="lightgray")
        for label, make in {"SGD": lambda p: lab.SGD(p, lr=0.03),
                            "SGD, momentum 0.8": lambda p: lab.SGD(p, lr=0.02, momentum=0.8),
                            "Adam": lambda p: lab.Adam(p, lr=0.1),
                            "Lion": lambda p: lab.Lion(p, lr=0.07)}.items():
            path = valley(make)
            plt.plot(path[:, 0], path[:, 1], ".-", markersize=3, label=f"{label}: ends at {path[-1].norm():.2f}")
        plt.title("60 steps from (-4, 1); the minimum is at (0, 0)")
        plt.legend(loc="upper left", bbox_to_anchor=(1, 1)); plt.tight_layout();
        '''),
    md(r'''
        ## 4. Newton-Schulz: orthogonalising a matrix

        The gradient of a weight matrix is usually dominated by a few directions (a few large singular values).
        Muon replaces the update $G = U S V^\top$ by $U V^\top$: the same directions, every singular value 1, so
        the rare directions move as much as the common ones. An SVD would do it but is slow on GPUs;
        Newton-Schulz needs only matmuls. After scaling $G$ to Frobenius norm 1 (so every singular value is at
        most 1), each step $X \leftarrow aX + (bA + cA^2)X$ with $A = XX^\top$ applies
        $s \mapsto as + bs^3 + cs^5$ to every singular value $s$. Keller Jordan's coefficients pull them all into
        about $[0.7, 1.2]$ in five steps: rough, and enough.
        '''),
    check_cell("optimizers", "newton_schulz"),
    code('''
        G = torch.randn(64, 32) @ torch.diag(torch.logspace(0, -2, 32))  # singular values spread over 100x
        print("singular values of G:              ", torch.linalg.svdvals(G)[[0, 8, 16, 24, 31]])
        print("after your newton_schulz (5 steps):", torch.linalg.svdvals(lab.newton_schulz(G))[[0, 8, 16, 24, 31]])
        '''),
    md('''
        ## 5. Muon

        Muon (Jordan et al. 2024) is SGD with Nesterov momentum whose update of each hidden weight matrix goes
        through `newton_schulz`, then is scaled by sqrt(max(1, rows / cols)). It is for 2-D weights only: the
        embeddings, the norms' gains, the biases (and usually the output head) are trained by Adam beside it.
        It set the speed records of the nanoGPT speedrun; `llmlab.train.optimizers.Muon` scales its step to
        AdamW's size instead (Liu et al. 2025), so one lr serves both kinds of weights.
        '''),
    check_cell("optimizers", "Muon"),
    md('''
        ## 6. The race

        A small byte-level decoder (2 blocks) learns Python's source code for 100 steps from the same weights on
        the same batches, once per optimizer, all yours: SGD with Nesterov momentum, Adam, Lion, and Muon for
        the blocks' matrices with Adam for the rest. Each has its own lr (a usual one for its kind, not tuned per
        run), with 10 warmup steps, a cosine decay and gradient clipping at 1. The held-out loss is measured
        on text none of them trained on.
        '''),
    code('''
        import copy
        import time

        from llmlab.labs.experiments import Run, corpus_bytes, held_out_loss, plot_runs
        from llmlab.models import Transformer, get_preset
        from llmlab.train.objectives import causal_lm_loss
        from llmlab.train.optim import lr_at
        from llmlab.train.optimizers import muon_param_groups

        text = corpus_bytes("stdlib/")
        text = text[: int(0.9 * len(text))]  # the last tenth is held_out_loss's
        torch.manual_seed(0)
        base = Transformer(get_preset("gpt2-tiny", vocab_size=256, seq_len=64, n_layer=2, n_embd=64, n_head=4))

        def race(label, make, steps=100, batch_size=16):
            model = copy.deepcopy(base)
            optimizers = make(model)  # a list: Muon comes with an Adam for the other weights
            peaks = [[group["lr"] for group in opt.param_groups] for opt in optimizers]
            g = torch.Generator().manual_seed(1)  # the same batches for every optimizer
            losses, start = [], time.perf_counter()
            for step in range(steps):
                for opt, peak in zip(optimizers, peaks):
                    for group, lr in zip(opt.param_groups, peak):
                        group["lr"] = lr_at(step, steps, lr, 10)
                starts = torch.randint(0, len(text) - 64, (batch_size,), generator=g).tolist()
                tokens = torch.stack([text[s:s + 64] for s in starts]).long()  # (B, T)
                loss = causal_lm_loss(model(tokens)[:, :-1], tokens[:, 1:])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                for opt in optimizers:
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                losses.append(loss.item())
            return Run(label, losses, held_out_loss(model), time.perf_counter() - start, model)

        def muon_and_adam(model):
            matrices, others, no_decay = muon_param_groups(model, 0.0)  # the blocks' 2-D weights first
            return [lab.Muon(matrices["params"], lr=0.02),
                    lab.Adam(others["params"] + no_decay["params"], lr=3e-3, betas=(0.9, 0.95))]

        runs = [race("SGD, Nesterov 0.9, lr 0.3", lambda m: [lab.SGD(m.parameters(), lr=0.3, momentum=0.9,
                                                                      nesterov=True)]),
                race("Adam, lr 3e-3", lambda m: [lab.Adam(m.parameters(), lr=3e-3, betas=(0.9, 0.95))]),
                race("Lion, lr 1e-3", lambda m: [lab.Lion(m.parameters(), lr=1e-3)]),
                race("Muon 0.02 + Adam 3e-3", muon_and_adam)]
        for run in runs:
            print(f"{run.label:>26}: held-out loss {run.held_out:.3f}")
        plot_runs(runs, "your optimizers on a small llmlab decoder");
        '''),
    md('''
        ## Done?

        `check("optimizers")` runs every check. One lr per optimizer is not a fair race: `llmlab compare
        optimizers` sweeps each one's lr on a longer run (and adds Adafactor), and `llmlab pretrain --optimizer
        muon` trains with any of them. Next on the path: `llmlab labs start lora`.
        '''),
    check_cell("optimizers"),
]
