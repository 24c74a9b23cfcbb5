"""Lab: preference, the notebook: sequence log-probabilities, the Bradley-Terry and DPO losses with their
checks, then DPO with the learner's functions on a small llmlab decoder next to DPO with llmlab's."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: preference losses

        After pretraining and instruction tuning, models are tuned on *preferences*: for one prompt, a chosen and
        a rejected answer. You write the three pieces this needs:

        1. `completion_logprob`: how likely the model finds a whole completion,
        2. `bradley_terry_loss`: the loss of a reward model that scores answers,
        3. `dpo_loss`: Direct Preference Optimisation, which tunes the language model itself, no reward model.

        Then DPO with your functions trains a small llmlab decoder to prefer the real continuation of Python code
        over text from elsewhere, next to DPO with llmlab's functions.

        Open `preference.py` next to this notebook, fill in a body, save, and rerun the check cell under it.
        `llmlab labs check preference` runs the same checks in a terminal. (About 35 minutes; it follows the
        AIMS workshop's RLHF, reward-model and DPO labs.)
        '''),
    setup("preference"),
    md(r'''
        ## 1. The log-probability of a completion

        A decoder gives, at every position, a distribution over the next token. The log-probability of a whole
        completion $y$ after a prompt $x$ is the *sum* of its tokens' log-probabilities,
        $\log \pi(y \mid x) = \sum_t \log \pi(y_t \mid x, y_{<t})$. The prompt's own tokens are not part of it:
        their targets are -100, as in llmlab's (and PyTorch's) ignore index.
        '''),
    check_cell("preference", "completion_logprob"),
    md(r'''
        ## 2. Bradley-Terry: a reward model's loss

        If a reward model scores the chosen answer $r_c$ and the rejected one $r_r$, the Bradley-Terry model says
        the chosen one wins with probability $\sigma(r_c - r_r)$. Training maximises that: the loss is
        $-\log \sigma(r_c - r_r)$. Written as `torch.log(torch.sigmoid(d))` it becomes $-\infty$ once $d$ is very
        negative; `F.logsigmoid` computes the same stably.
        '''),
    check_cell("preference", "bradley_terry_loss"),
    md(r'''
        ## 3. DPO

        DPO (Rafailov et al. 2023) shows that the reward is implicitly $\beta \log \frac{\pi(y|x)}{\pi_{ref}(y|x)}$,
        the policy's log-ratio to a frozen reference copy, so the Bradley-Terry loss can train the policy directly:

        $$\mathcal{L} = -\log \sigma\Big(\beta \log \frac{\pi(y_c)}{\pi_{ref}(y_c)}
                                         - \beta \log \frac{\pi(y_r)}{\pi_{ref}(y_r)}\Big)$$

        $\beta$ (0.1 is usual) sets how far the policy may move from the reference.
        '''),
    check_cell("preference", "dpo_loss"),
    md('''
        ## 4. DPO with your functions on an llmlab model

        A small byte-level decoder first learns Python's source code for a few seconds. Then two copies of it are
        tuned with DPO on the same pairs: each prompt's real continuation is "chosen", a piece of text from
        elsewhere "rejected". One uses your `completion_logprob` and `dpo_loss`, one llmlab's. The loss curves
        should coincide; the held-out preference accuracy rises above the 50% of chance.
        '''),
    code('''
        from llmlab.labs.experiments import compare_dpo, plot_runs
        from llmlab.labs.preference import solution as llmlab_way

        runs = compare_dpo({"llmlab's DPO": (llmlab_way.completion_logprob, llmlab_way.dpo_loss),
                            "your DPO": (lab.completion_logprob, lab.dpo_loss)}, pretrain_steps=60, steps=60)
        for run in runs:
            print(f"{run.label}: held-out preference accuracy {run.held_out:.0%}")
        plot_runs(runs, "DPO: real continuation against text from elsewhere");
        '''),
    md('''
        ## Done?

        `check("preference")` runs every check. `llmlab align dpo` runs DPO (and IPO, hinge, SimPO) on real
        preference data; `llmlab align reward` trains a Bradley-Terry reward model. Next on the path:
        `llmlab labs start rag`.
        '''),
    check_cell("preference"),
]
