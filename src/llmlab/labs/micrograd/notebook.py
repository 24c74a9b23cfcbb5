"""Lab: micrograd, the notebook: derivatives one operation at a time, the chain rule through a graph, the
checks, then a tiny network on the learner's engine trained next to the same network on llmlab's."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: micrograd, autograd for scalars

        `loss.backward()` in PyTorch fills every parameter's `.grad`. In this lab you build the machinery behind it
        for single numbers, as in Karpathy's micrograd: a `Value` that remembers how it was computed, and a
        `backward()` that applies the chain rule through the whole graph. Then a small neural network on your
        engine learns to separate two half-moons, next to the same network on llmlab's engine.

        Open `micrograd.py` next to this notebook, fill in the methods, save, and rerun the check cell.
        `llmlab labs check micrograd` runs the same checks in a terminal. (About 45 minutes; it follows week 2.3
        of the 8-week course.)
        '''),
    setup("micrograd"),
    md(r'''
        ## 1. One operation, its local derivative

        For $c = a \cdot b$: $\partial c / \partial a = b$ and $\partial c / \partial b = a$. If some later result
        $L$ has $\partial L / \partial c$ (that is `c.grad`), the chain rule gives $a$ the share
        $b \cdot$ `c.grad`, and $b$ the share $a \cdot$ `c.grad`. Each operation stores a small `_backward`
        function that does exactly this for its inputs. A value used twice (`a * a`) gets a share from each use:
        gradients are *added* (`+=`).

        PyTorch does the same, so it can check your numbers:
        '''),
    code('''
        a, b = torch.tensor(2.0, requires_grad=True), torch.tensor(-3.0, requires_grad=True)
        c = a * b + a ** 2
        c.backward()
        print(f"c = {c.item()}, dc/da = {a.grad.item()} (b + 2a), dc/db = {b.grad.item()} (a)")
        '''),
    md('''
        ## 2. The whole graph

        `backward()` must call each node's `_backward` only after every node that *uses* it has passed its share
        on. A depth-first walk from the result, appending a node after its inputs, gives a topological order;
        running it in reverse does the job. Start with `self.grad = 1`: dL/dL.
        '''),
    check_cell("micrograd", "Value"),
    md('''
        ## 3. A neural network on your engine

        A network with 8 tanh units, built from `Value`s, learns to separate llmlab's two moons with gradient
        descent: once on your engine, once on llmlab's (`llmlab.fundamentals.autograd`), from the same weights.
        Right engines give the same curve.
        '''),
    code('''
        from llmlab.fundamentals.autograd import Value as LlmlabValue
        from llmlab.labs.experiments import plot_runs, train_scalar_mlp

        runs = [train_scalar_mlp(LlmlabValue, "llmlab's engine"), train_scalar_mlp(lab.Value, "your engine")]
        for run in runs:
            print(f"{run.label}: loss {run.losses[0]:.3f} -> {run.losses[-1]:.3f}, accuracy {run.held_out:.0%}")
        plot_runs(runs, "a tanh network on two moons");
        '''),
    md('''
        ## Done?

        `check("micrograd")` runs every check. `llmlab fundamentals autograd` trains a bigger network this way
        and draws its decision boundary. Next on the path: `llmlab labs start ngram-and-backprop`.
        '''),
    check_cell("micrograd"),
]
