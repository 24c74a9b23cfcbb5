"""Lab: training-loop, the notebook: each piece of the loop with its check, then the learner's loop and AdamW
training a small llmlab decoder next to llmlab's own trainer (and with accumulation, and in bf16)."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: the training loop

        Pretraining a language model is one loop, run for a long time: take a batch, compute the loss, backward,
        step the optimizer, change the learning rate. Each piece is small, and each has a classic mistake that
        still trains, only worse. You write:

        1. `next_token_loss`: cross-entropy of every next token (the shift, the ignored targets),
        2. `AdamW`: Adam with decoupled weight decay and bias correction,
        3. `lr_at`: linear warmup, then cosine decay,
        4. `clip_grad_norm`: clipping by the global norm of all gradients,
        5. `train_step`: one step over several micro-batches (gradient accumulation), in bf16 if asked,
        6. `train`: the loop.

        Then your loop and your AdamW train a small llmlab decoder next to llmlab's own trainer.

        Open `training-loop.py` next to this notebook, fill in a body, save, and rerun the check cell under it.
        `llmlab labs check training-loop` runs the same checks in a terminal; `llmlab labs solution
        training-loop` shows llmlab's code. (About 60 minutes; it follows AMD's lab 08 and weeks 4.2 and 4.3 of
        the 8-week course.)
        '''),
    setup("training-loop"),
    md('''
        ## 1. The loss: predict the next token

        A decoder reads tokens (B, T) and returns logits (B, T, V): position t has seen tokens 0..t and predicts
        token t + 1. So the logits of the last position have nothing to predict, and the first token is never a
        target: compare `logits[:, :-1]` with `tokens[:, 1:]`, B * (T - 1) predictions.

        Targets equal to `ignore_index` (-100 by convention: padding, or the prompt in fine-tuning) count in
        neither the sum nor the mean. `F.cross_entropy(..., ignore_index=...)` does both, and its log-softmax
        subtracts the maximum first, so huge logits do not overflow. Compute it in float32: in bf16 the loss
        keeps about three significant digits.
        '''),
    code('''
        tokens = torch.tensor([[10, 11, 12, 13]])
        print("inputs :", tokens[0, :-1].tolist(), " (the positions whose logits count)")
        print("targets:", tokens[0, 1:].tolist())
        '''),
    check_cell("training-loop", "next_token_loss"),
    md(r'''
        ## 2. AdamW

        Adam keeps, per weight, a running mean of the gradient $m$ and of its square $v$, and steps by
        $m / \sqrt{v}$: about `lr` per step whatever the gradient's scale. Both start at zero, so early on they
        are too small by a factor $1 - \beta^t$; **bias correction** divides that out.

        Weight decay in plain Adam is L2: $\lambda p$ added to the gradient, which then gets divided by
        $\sqrt{v}$, so weights with large gradients are hardly decayed. **AdamW** (Loshchilov & Hutter 2019)
        *decouples* it: $p \leftarrow p - \text{lr}\,\lambda\, p$, outside Adam. That is why AdamW, not Adam
        with weight decay, trains every modern LLM.

        `AdamW` subclasses `torch.optim.Optimizer`: its `param_groups` (each with its own lr and weight decay)
        and `state` (per parameter) are what schedules, clipping and checkpoints expect.
        '''),
    check_cell("training-loop", "AdamW"),
    md('''
        ## 3. The schedule: warmup, then cosine

        At the start Adam's $v$ knows little and the weights are random: big steps there can blow up the run.
        So the lr rises linearly for `warmup_steps`, then follows half a cosine down to `lr * min_lr_ratio`
        (GPT-3, Chinchilla, nanoGPT; 10% of the peak is usual).
        '''),
    check_cell("training-loop", "lr_at"),
    code('''
        import matplotlib.pyplot as plt

        steps = range(1200)
        plt.figure(figsize=(6, 2.5))
        plt.plot(steps, [lab.lr_at(s, 1000, 3e-3, 100) for s in steps])
        plt.xlabel("step"); plt.ylabel("lr"); plt.title("your schedule: 100 warmup steps, 1000 in all");
        '''),
    md('''
        ## 4. Clipping the gradient by its global norm

        A rare bad batch can give a gradient hundreds of times the usual size, and one such step can undo hours
        of training. Clipping rescales *all* gradients together when their global norm, $\\sqrt{\\sum_i g_i^2}$
        over every entry of every parameter, exceeds `max_norm` (1.0 is usual). Together, so the direction of
        the step is kept; clipping each tensor on its own, or each entry, changes it.
        '''),
    check_cell("training-loop", "clip_grad_norm"),
    md('''
        ## 5. One step: gradient accumulation and mixed precision

        **Accumulation.** A batch too big for memory is split into micro-batches: backward each one, let the
        gradients add up in `.grad`, and step once. Divide each loss by the number of micro-batches, so the sum
        is the gradient of the *mean*: the same step as one big batch. Clip after the last backward, step, then
        clear the gradients for the next step.

        **Mixed precision.** `torch.autocast(device_type, dtype=torch.bfloat16)` runs the matmuls of the forward
        in bf16 and keeps the weights, their gradients and the optimizer in float32. bf16 has float32's range,
        so nothing overflows or underflows. float16 has a far smaller range: small gradients become 0. That is
        why float16 training multiplies the loss by a large *loss scale* before backward and divides the
        gradients by it before the step (`torch.amp.GradScaler`, which also lowers the scale after an overflow).
        bf16 needs none of it:
        '''),
    code('''
        g = torch.tensor(1e-8)
        print("a gradient of 1e-8 in float16:", g.half().item(), "| in bfloat16:", g.bfloat16().item())
        print("scaled by 2**16 in float16, then unscaled:", ((g * 2**16).half().float() / 2**16).item())
        '''),
    check_cell("training-loop", "train_step"),
    md('''
        ## 6. The loop

        Before each step, set every param group's lr from the schedule; then one `train_step` on `grad_accum`
        fresh micro-batches. The check runs your loop next to llmlab's `train_loop` on the same batches.
        '''),
    check_cell("training-loop", "train"),
    md('''
        ## 7. Your loop trains an llmlab decoder

        A small byte-level decoder (2 blocks) learns Python's own source code, four times from the same weights
        on the same batches: with llmlab's trainer and torch's AdamW; with your `train` and your `AdamW`; with
        yours on two micro-batches of 8 instead of one batch of 16 (the same rows, so accumulation should give
        the same curve); and with yours in bf16 (close, not equal). The held-out loss is measured on text the
        runs never saw.
        '''),
    code('''
        import copy
        import time

        from llmlab.labs.experiments import Run, corpus_bytes, held_out_loss, plot_runs
        from llmlab.models import Transformer, get_preset
        from llmlab.train.loop import LoopSettings, TrainState, train_loop
        from llmlab.train.objectives import causal_lm_loss
        from llmlab.train.optim import make_adamw, param_groups

        text = corpus_bytes("stdlib/")
        text = text[: int(0.9 * len(text))]  # the last tenth is held_out_loss's

        def batches(batch_size=16, seq_len=64):  # the same rows for every run
            g = torch.Generator().manual_seed(1)
            def next_batch():
                starts = torch.randint(0, len(text) - seq_len, (batch_size,), generator=g).tolist()
                return torch.stack([text[s:s + seq_len] for s in starts]).long()  # (B, T)
            return next_batch

        torch.manual_seed(0)
        base = Transformer(get_preset("gpt2-tiny", vocab_size=256, seq_len=64, n_layer=2, n_embd=64, n_head=4))

        def run(label, fit):
            model = copy.deepcopy(base)
            start = time.perf_counter()
            losses = fit(model)
            return Run(label, losses, held_out_loss(model), time.perf_counter() - start, model)

        def llmlab_trainer(model, steps=100):
            settings = LoopSettings(max_steps=steps, lr=3e-3, warmup_steps=10, progress=False)
            state = train_loop(model, make_adamw(model, 3e-3, 0.1), batches(), settings, TrainState(),
                               loss_fn=lambda m, tokens: causal_lm_loss(m(tokens)[:, :-1], tokens[:, 1:]))
            return [row["loss"] for row in state.history]

        def yours(model, steps=100, batch_size=16, grad_accum=1, autocast_dtype=None):
            optimizer = lab.AdamW(param_groups(model, 0.1), lr=3e-3, betas=(0.9, 0.95))
            return lab.train(model, optimizer, batches(batch_size), steps, 3e-3, warmup_steps=10,
                             grad_accum=grad_accum, autocast_dtype=autocast_dtype)

        runs = [run("llmlab's trainer", llmlab_trainer), run("your loop and AdamW", yours),
                run("yours, 2 x 8 accumulated", lambda m: yours(m, batch_size=8, grad_accum=2)),
                run("yours in bf16", lambda m: yours(m, autocast_dtype=torch.bfloat16))]
        gap = max(abs(a - b) for a, b in zip(runs[0].losses, runs[1].losses))
        print(f"largest gap between llmlab's curve and yours: {gap:.2g} nats")
        plot_runs(runs, "a small llmlab decoder trained by your loop");
        '''),
    md('''
        ## Done?

        `check("training-loop")` runs every check. llmlab's real loop (`llmlab.train.loop.train_loop`, used by
        `llmlab pretrain`) adds what a long run needs: skipping non-finite steps, evaluation, checkpoints that
        resume exactly, several processes. Next on the path: `llmlab labs start optimizers`.
        '''),
    check_cell("training-loop"),
]
