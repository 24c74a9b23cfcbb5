"""Lab: scaling-fit, the notebook: Chinchilla's law, fitting it, the compute-optimal split and isoFLOP minima,
the checks after each part, then the learner's fit of a dozen tiny llmlab training runs next to llmlab's fit."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: fitting a scaling law

        How much better does a model get with more parameters, or more data, and how should a fixed compute
        budget be split between the two? Chinchilla (Hoffmann et al., 2022) answered by training hundreds of
        models and fitting one formula to their losses. You write:

        1. `scaling_law(n, d, E, A, B, alpha, beta)`: the formula,
        2. `fit_scaling_law(n, d, loss)`: its five constants from a set of runs,
        3. `compute_optimal(c, ...)`: the best model size and token count for a budget of C FLOPs,
        4. `isoflop_minimum(n, loss)`: the same answer read from runs of one budget, the other way Chinchilla did.

        Then you train a dozen tiny llmlab models for half a minute, fit your law to them next to llmlab's fit,
        and ask it what size the next budget should buy.

        Open `scaling-fit.py` next to this notebook, fill in a body, save, and rerun the check cell under it.
        `llmlab labs check scaling-fit` runs the same checks in a terminal; `llmlab labs solution scaling-fit`
        shows llmlab's code. (About 40 minutes.)
        '''),
    setup("scaling-fit"),
    md(r'''
        ## 1. The law

        $$L(N, D) = E + \frac{A}{N^\alpha} + \frac{B}{D^\beta}$$

        $N$ is the number of parameters (without the embedding table, which costs no FLOPs), $D$ the number of
        training tokens. $E$ is the loss of a perfect model, the entropy of the text itself; the second term is
        what a model of finite size costs, the third what finite data costs. Training costs $C \approx 6ND$
        FLOPs: each weight does a multiply and an add per token forward (2), and twice that backward (4).

        With Chinchilla's own constants, Gopher (280B parameters, 300B tokens) and Chinchilla (70B, 1.4T tokens)
        cost about the same compute. The smaller model trained on more data wins:
        '''),
    code('''
        E, A, B, alpha, beta = 1.69, 406.4, 410.7, 0.34, 0.28  # Chinchilla's fit (their table A3)
        for name, n, d in (("Gopher", 280e9, 300e9), ("Chinchilla", 70e9, 1.4e12)):
            print(f"{name:>10}: C = {6 * n * d:.2e} FLOPs, loss = {E:.2f} + {A / n**alpha:.3f} (size) "
                  f"+ {B / d**beta:.3f} (data) = {E + A / n**alpha + B / d**beta:.3f}")
        '''),
    check_cell("scaling-fit", "scaling_law"),
    md(r'''
        ## 2. Fitting it

        Five constants, a few dozen runs. Chinchilla fits in logs: with $A = e^a$, $B = e^b$, $E = e^e$ the
        constants stay positive whatever the optimiser does, and

        $$\log \hat L = \operatorname{logsumexp}(a - \alpha \log N,\; b - \beta \log D,\; e)$$

        is smooth in all five. Minimise the error between $\log \hat L$ and the measured $\log L$ over the runs.
        (Chinchilla uses a Huber loss, which one bad run cannot pull far, and so does llmlab; squared error is
        fine here.) The objective is not convex: start from a few points and keep the best. The checks plant a
        law, and your fit must find it from exact losses, and fit noisy runs about as well as llmlab's.
        '''),
    check_cell("scaling-fit", "fit_scaling_law"),
    md(r'''
        ## 3. The compute-optimal split

        For a budget $C$, put $D = C / (6N)$ into the law and set the derivative in $N$ to zero:

        $$N_{opt} = G \left(\frac{C}{6}\right)^{\frac{\beta}{\alpha + \beta}}, \quad
          D_{opt} = \frac{C / 6}{N_{opt}}, \quad G = \left(\frac{\alpha A}{\beta B}\right)^{\frac{1}{\alpha + \beta}}$$

        When $\alpha \approx \beta$ both grow as $\sqrt{C}$: a 10x budget buys a model about 3x larger trained on
        3x more tokens, not a 10x larger model (Kaplan et al. 2020 had found the opposite, from runs whose
        learning-rate schedule did not fit their length).
        '''),
    check_cell("scaling-fit", "compute_optimal"),
    code('''
        for c in (1e21, 5.76e23, 1e25):
            n_opt, d_opt = lab.compute_optimal(c, E, A, B, alpha, beta)
            print(f"C = {c:.2e} FLOPs: N_opt = {float(n_opt):.3g} parameters, D_opt = {float(d_opt):.3g} tokens "
                  f"({float(d_opt / n_opt):.0f} tokens per parameter)")
        '''),
    md(r'''
        ## 4. IsoFLOP minima

        Chinchilla's second approach needs no formula for the whole surface: train several sizes at one budget
        each (smaller models see more tokens), and the loss against $\log N$ is roughly a parabola whose lowest
        point is that budget's $N_{opt}$. The minimum usually lies between two of the runs, hence the fit.
        '''),
    check_cell("scaling-fit", "isoflop_minimum"),
    md('''
        ## 5. Your law on llmlab's runs

        Twelve runs of four tiny byte-level llmlab decoders, from 3k to 100k non-embedding parameters, each for
        20, 50 or 120 steps of 16 x 64 bytes on Python's own sources, each with its cosine learning-rate schedule
        over its own length (as Chinchilla does), each measured on the same held-out bytes. About 15 seconds on
        an idle core.
        '''),
    code('''
        import numpy as np

        from llmlab.labs.experiments import corpus_bytes
        from llmlab.models import Transformer, get_preset
        from llmlab.train.loop import LoopSettings, TrainState, train_loop
        from llmlab.train.objectives import lm_loss
        from llmlab.train.optim import make_adamw
        from llmlab.train.scaling import fit_law, non_embedding_params

        text = corpus_bytes("stdlib/")  # Python's standard library sources, 400k bytes
        split = int(0.9 * len(text))


        def windows(data, n, generator):
            """n random rows of 65 bytes: 64 inputs, and the same shifted by one as targets."""
            starts = torch.randint(0, len(data) - 65, (n,), generator=generator).tolist()
            rows = torch.stack([data[s:s + 65] for s in starts]).long()  # (n, 65)
            return rows[:, :-1], rows[:, 1:]


        held_out = windows(text[split:], 64, torch.Generator().manual_seed(1))
        runs = []
        for n_layer, n_embd in ((1, 16), (1, 32), (2, 32), (2, 64)):
            for steps in (20, 50, 120):
                torch.manual_seed(0)
                model = Transformer(get_preset("gpt2-tiny", vocab_size=256, seq_len=64, n_layer=n_layer,
                                               n_embd=n_embd, n_head=n_embd // 16))
                batches = torch.Generator().manual_seed(0)  # the same batches for every run
                settings = LoopSettings(max_steps=steps, lr=3e-3, warmup_steps=steps // 10, progress=False)
                train_loop(model, make_adamw(model, 3e-3, 0.01, device_type="cpu"),
                           lambda: windows(text[:split], 16, batches), settings, TrainState())
                with torch.no_grad():
                    runs.append((non_embedding_params(model), steps * 16 * 64, float(lm_loss(model.eval(), held_out))))
                print(f"{n_layer}x{n_embd}, {steps:>3} steps: N = {runs[-1][0]:>6}, D = {runs[-1][1]:>6} bytes, "
                      f"held-out loss {runs[-1][2]:.3f}")
        n, d, loss = (np.array(v, dtype=float) for v in zip(*runs))
        '''),
    code('''
        import matplotlib.pyplot as plt

        yours = lab.fit_scaling_law(n, d, loss)
        ref = fit_law(n, d, loss)
        llmlab = (ref.E, ref.A, ref.B, ref.alpha, ref.beta)
        for label, fit in (("your fit", yours), ("llmlab's fit", llmlab)):
            print(f"{label:>13}: E = {fit[0]:.2f}, A = {fit[1]:.3g}, B = {fit[2]:.3g}, alpha = {fit[3]:.3f}, "
                  f"beta = {fit[4]:.3f}")

        fig, ax = plt.subplots(figsize=(7, 4.5))
        d_line = np.geomspace(d.min() / 1.5, d.max() * 4, 100)
        for size, colour in zip(sorted(set(n)), plt.cm.viridis(np.linspace(0, 0.9, len(set(n)))), strict=True):
            ax.scatter(d[n == size], loss[n == size], color=colour, s=25, zorder=3)
            ax.plot(d_line, lab.scaling_law(size, d_line, *yours), color=colour, label=f"N = {size:.0f}")
            ax.plot(d_line, lab.scaling_law(size, d_line, *llmlab), color=colour, linestyle=":")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # label only the powers of ten
        ax.set_xlabel("training tokens D (bytes)")
        ax.set_ylabel("held-out loss (nats per byte)")
        ax.set_title("tiny llmlab runs: your law (solid) and llmlab's (dotted)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8);
        '''),
    md('''
        Twelve runs of seconds each pin the constants only loosely: llmlab's Huber fit and a squared-error fit
        may disagree on E and A, yet both follow the points. `llmlab scaling sweep` does this properly, with
        bootstrap intervals and a prediction checked on a larger model (`docs/scaling.md`). What does your law
        say the next budget should buy? Approach 2 on your own law (the loss along 6 N D = C, at seven sizes)
        should land near approach 3's answer:
        '''),
    code('''
        c = 10 * 6 * n.max() * d.max()  # ten times the largest run's compute
        n_opt, d_opt = lab.compute_optimal(c, *yours)
        sizes = float(n_opt) * np.geomspace(0.2, 5, 7)
        iso = lab.isoflop_minimum(sizes, lab.scaling_law(sizes, c / 6 / sizes, *yours))
        print(f"C = {c:.2e} FLOPs: your law's N_opt = {float(n_opt):.0f} parameters on {float(d_opt):.0f} bytes; "
              f"the isoFLOP parabola's minimum: {iso:.0f}")
        '''),
    md('''
        ## Done?

        `check("scaling-fit")` runs every check. Going further: `llmlab scaling sweep --budget 15` plans isoFLOP
        budgets for your machine, trains the grid, fits both approaches with bootstrap intervals, and tests a
        prediction on a size beyond the grid. Next on the path: `llmlab labs start roofline`.
        '''),
    check_cell("scaling-fit"),
]
