"""Lab: modules, the notebook: nn.Module, parameters and state_dict, each followed by its check, ending with
the learner's MLP inside every block of an llmlab decoder that trains."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: modules

        `torch.nn.Module` is how PyTorch groups parameters with the code that uses them. In this lab you write
        `nn.Linear` yourself, build GPT-2's MLP from it, count a model's parameters, and save and load weights.
        At the end your MLP replaces llmlab's in every block of a small decoder, which trains.

        Open `modules.py` next to this notebook, fill in a body, save, and rerun the check cell under it.
        `llmlab labs check modules` runs the same checks in a terminal; `llmlab labs solution modules` shows
        llmlab's code. (About 35 minutes; it follows AMD's labs 03 and 09.)
        '''),
    setup("modules"),
    md('''
        ## 1. A linear layer

        Assigning an `nn.Parameter` (or another module) to `self` *registers* it: `.parameters()` finds it, the
        optimizer trains it, `.state_dict()` saves it, `.to("cuda")` moves it. A plain tensor assigned to self is
        none of these. torch draws a linear layer's weights uniformly in $\\pm 1/\\sqrt{in}$, so outputs start
        with about the spread of the inputs.
        '''),
    code('''
        layer = torch.nn.Linear(3, 2)
        for name, p in layer.named_parameters():
            print(name, tuple(p.shape))
        print(list(layer.state_dict()))
        '''),
    check_cell("modules", "Linear"),
    md('''
        ## 2. An MLP from modules

        Modules nest: an MLP holds two linear layers, and its parameters are theirs, named by path
        (`up_proj.weight`). With llmlab's names, llmlab's own `GeluMLP` weights load straight into yours.
        '''),
    check_cell("modules", "MLP"),
    md('''
        ## 3. Counting parameters

        Small models tie the output layer to the token embedding: `lm_head.weight` *is* `tok_emb.weight`. It is
        one tensor, so it counts once; `model.parameters()` yields each tensor once, a `state_dict` lists both names.
        '''),
    check_cell("modules", "count_parameters"),
    md('''
        ## 4. Saving and loading

        Weights are saved as the `state_dict`, a mapping of names to tensors, and loaded into a freshly built model
        of the same shape. `torch.save` pickles (loading a pickle from a stranger can run code; `weights_only=True`
        guards it); llmlab writes safetensors files, which hold only tensors.
        '''),
    check_cell("modules", "save_weights"),
    md('''
        ## 5. Your MLP inside llmlab's decoder

        Every block's MLP of a small llmlab decoder is replaced by your `MLP`, with the same weights loaded in; an
        unchanged copy trains next to it on the same batches. Right modules give the same curve.
        '''),
    code('''
        from llmlab.labs.experiments import compare_training, plot_runs, use_module

        def yours(model):
            return use_module(model, "GeluMLP", lambda old: lab.MLP(old.up_proj.in_features, old.up_proj.out_features))

        runs = compare_training({"llmlab's MLP": lambda model: model, "your MLP": yours}, steps=100)
        model = runs[1].model
        print(f"{lab.count_parameters(model)} parameters, {model.tok_emb.weight.numel()} of them in the tied embedding")
        plot_runs(runs, "llmlab's decoder with your MLP");
        '''),
    md('''
        ## Done?

        `check("modules")` runs every check. Next on the path: `llmlab labs start micrograd`.
        '''),
    check_cell("modules"),
]
