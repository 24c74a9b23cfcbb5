"""Lab: sampling, the notebook: temperature, top-k and top-p with their checks, then the learner's `sample`
writing text from a freshly trained llmlab decoder, next to llmlab's sampler with the same seed."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: sampling

        A language model gives, at each step, a score (logit) for every token of its vocabulary. Generation turns
        those scores into one chosen token. In this lab you write the ways to choose:
        `apply_temperature`, `top_k_filter`, `top_p_filter` and `sample`. Then your `sample` writes text with a
        small llmlab model trained a moment before, next to llmlab's own sampler.

        Open `sampling.py` next to this notebook, fill in a body, save, and rerun the check cell under it.
        `llmlab labs check sampling` runs the same checks in a terminal. (About 30 minutes; it follows AMD's
        lab 01.)
        '''),
    setup("sampling"),
    md(r'''
        ## 1. Temperature

        Softmax turns logits into probabilities. Dividing the logits by a temperature $\tau$ first sharpens the
        distribution ($\tau < 1$) or flattens it ($\tau > 1$); $\tau \to 0$ is the argmax ("greedy").
        '''),
    code('''
        logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
        for t in (0.5, 1.0, 2.0):
            print(f"temperature {t}:", [round(p, 3) for p in (logits / t).softmax(-1).tolist()])
        '''),
    check_cell("sampling", "apply_temperature"),
    md('''
        ## 2. Top-k and top-p

        Sampling from the full distribution sometimes picks one of the thousands of unlikely tokens, and one bad
        token derails the rest. **Top-k** keeps the k likeliest tokens. **Top-p** (nucleus sampling, Holtzman et
        al. 2019) keeps the smallest set of likeliest tokens whose probabilities sum to at least p, so it keeps
        few tokens when the model is sure and many when it is not. Removed tokens get the logit $-\\infty$: their
        probability after softmax is exactly 0.
        '''),
    check_cell("sampling", "top_k_filter"),
    check_cell("sampling", "top_p_filter"),
    md('''
        ## 3. Drawing a token

        `sample` applies temperature, then top-k, then top-p (the order transformers and llmlab use), and draws
        from the softmax with `torch.multinomial`. It takes a `torch.Generator`, so a seed makes a draw repeatable.
        '''),
    check_cell("sampling", "sample"),
    md('''
        ## 4. Your sampler writing with an llmlab model

        A small byte-level decoder trains for a few seconds on Python's source code. Then it continues a prompt
        with your `sample` and with llmlab's, from the same seed: equal samplers write the same text. The lower
        the temperature, the more repetitive and "safe" the text.
        '''),
    code('''
        from llmlab.infer.sampling import sample as llmlab_sample
        from llmlab.labs.experiments import compare_training, generate_text

        (run,) = compare_training({"llmlab": lambda model: model}, steps=100)
        prompt = "def "
        for settings in ({"temperature": 0.0}, {"temperature": 0.8, "top_k": 20}, {"temperature": 1.0, "top_p": 0.9}):
            yours = generate_text(run.model, prompt, 60, lab.sample, seed=0, **settings)
            theirs = generate_text(run.model, prompt, 60, llmlab_sample, seed=0, **settings)
            print(f"{settings}  {'same text as llmlab' if yours == theirs else 'DIFFERENT from llmlab'}")
            print("   ", repr(prompt + yours))
        '''),
    md('''
        ## Done?

        `check("sampling")` runs every check. `llmlab generate` uses llmlab's version of exactly these functions
        (`llmlab.infer.sampling`), with min-p and a repetition penalty besides. Next on the path:
        `llmlab labs start preference`.
        '''),
    check_cell("sampling"),
]
