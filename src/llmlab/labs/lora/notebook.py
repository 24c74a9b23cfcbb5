"""Lab: LoRA, the notebook: the idea, the checks after each part, and the learner's LoRA fine-tuning a small
pretrained llmlab decoder next to llmlab's LoRA and full fine-tuning."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: LoRA from scratch

        Fine-tuning every weight of a model needs a copy of all of them and their optimizer state. LoRA (Hu et al.,
        2021) freezes the model and learns a small *low-rank* change of chosen weight matrices instead. You write:

        1. `LoRALinear`: a frozen `nn.Linear` plus the trainable update, and `merge()` to fold it back in,
        2. `add_lora(model, ...)`: swap the attention's query and value projections of a model for your layer.

        Then your LoRA fine-tunes a small pretrained llmlab decoder on new text, next to llmlab's own LoRA and
        full fine-tuning.

        Open `lora.py` next to this notebook, fill in a body, save, and rerun the check cell under it.
        `llmlab labs check lora` runs the same checks in a terminal; `llmlab labs solution lora` shows llmlab's
        code. (About 40 minutes; it follows the AIMS workshop's "LoRA from scratch" and AMD's lab 07.)
        '''),
    setup("lora"),
    md(r'''
        ## 1. The LoRA layer

        A linear layer computes $y = x W^\top + b$ with $W \in \mathbb{R}^{out \times in}$. LoRA keeps $W$ frozen
        and adds $\frac{\alpha}{r} B A$, with $A \in \mathbb{R}^{r \times in}$ and $B \in \mathbb{R}^{out \times r}$
        for a small rank $r$:

        $$y = x W^\top + b + \frac{\alpha}{r}\, x A^\top B^\top$$

        - **B starts at zero**, so the adapted model starts exactly as the original; **A starts random**: if both
          were zero, neither would ever get a gradient.
        - **The scale is $\alpha / r$**, not $\alpha$: with it, changing the rank does not change how big the
          update is, so the learning rate can stay.
        - Only $A$ and $B$ train: $r\,(in + out)$ numbers instead of $in \times out$.

        `merge()` returns an ordinary `nn.Linear` with $W + \frac{\alpha}{r} B A$: after training, the adapter
        costs nothing at inference.
        '''),
    code('''
        layer = torch.nn.Linear(576, 576)
        for r in (1, 8, 64):
            print(f"rank {r:>2}: {r * (576 + 576):>6} trainable numbers instead of {576 * 576}")
        '''),
    check_cell("lora", "LoRALinear"),
    md('''
        ## 2. Adding LoRA to a model

        LoRA replaces modules in place: walk `model.named_modules()`, and for each `nn.Linear` whose name ends
        with a target (the paper's choice: `q_proj` and `v_proj`), put a `LoRALinear` around it where it was.
        Freeze the whole model first, so only the adapters train.
        '''),
    check_cell("lora", "add_lora"),
    md('''
        ## 3. Your LoRA fine-tuning an llmlab model

        A small byte-level decoder first trains on Python's source code (the same for every run below), then three
        copies of it learn Python's English help texts: by full fine-tuning, with llmlab's LoRA, and with yours
        (rank 8 on the query and value projections). The two LoRA curves should lie on top of each other; full
        fine-tuning, with many more trainable numbers, goes lower.
        '''),
    code('''
        from llmlab.finetune.lora import apply_lora
        from llmlab.labs.experiments import compare_training, plot_runs
        from llmlab.models.gpt import count_parameters

        runs = compare_training({
            "full fine-tuning": lambda model: model,
            "llmlab's LoRA": lambda model: apply_lora(model, rank=8, alpha=16),
            "your LoRA": lambda model: lab.add_lora(model, rank=8, alpha=16),
        }, pretrain_steps=100, data="pydoc/", steps=80)
        for run in runs:
            print(f"{run.label:>16}: {count_parameters(run.model, trainable_only=True):>7} trainable, "
                  f"held-out loss {run.held_out:.3f}")
        plot_runs(runs, "fine-tuning on Python's help texts");
        '''),
    md('''
        ## Done?

        `check("lora")` runs every check. Going further: QLoRA is this same adapter on a base stored in 4 bits
        (`llmlab.finetune.lora.apply_qlora`), and `llmlab finetune compare` puts the methods side by side. Next on
        the path: `llmlab labs start quantization`.
        '''),
    check_cell("lora"),
]
