"""Lab: sharding, the notebook: the ring collectives and the two tensor-parallel linear layers with the checks
after each, then the bytes the learner's all-reduce sends against the formula, and the learner's
tensor-parallel MLP inside an llmlab decoder, training next to llmlab's own."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: sharding a matmul over devices

        When one model is too big or too slow for one accelerator, each of its matrix products is split over p
        devices: **tensor parallelism** (Megatron-LM, Shoeybi et al. 2019). The devices then have to exchange
        partial results, through *collectives*, and the bytes they send are often what limits the speed. You write:

        1. `reduce_scatter`, `all_gather` and `all_reduce`: the ring algorithms, which send the fewest bytes,
        2. `column_parallel` and `row_parallel`: a linear layer split by output features, and by input features.

        Then you count what your all-reduce sends against the formula, and your tensor-parallel MLP runs inside an
        llmlab decoder, training exactly like llmlab's own.

        The devices are simulated in this one process: a list of p tensors is what the p devices hold, entry r
        on device r. A device computes only with its own entries; anything from another device arrives through
        `send(src, dst, tensor)`, which returns a copy and counts the bytes `src` sent. The checks pass their
        own `send` and hold every count to the formulas in `llmlab.train.collectives`.

        Open `sharding.py` next to this notebook, fill in a body, save, and rerun the check cell under it.
        `llmlab labs check sharding` runs the same checks in a terminal. (About 45 minutes.)
        '''),
    setup("sharding"),
    code('''
        class Network:
            """send(src, dst, tensor): a copy for device dst, with the bytes each device sends counted."""

            def __init__(self, p):
                self.sent = [0] * p

            def __call__(self, src, dst, tensor):
                self.sent[src] += tensor.numel() * tensor.element_size()
                return tensor.clone()  # gradients flow through a clone
        '''),
    md('''
        ## 1. Reduce-scatter

        Each device holds a tensor of n bytes; device r should end with chunk r of their sum. Sending everything
        to one device would put (p - 1) n bytes on its links. The **ring** does better: devices stand in a circle,
        each sends only to its right neighbour, and every tensor is cut into p chunks. At step s = 0 .. p-2,
        device r sends its running sum of chunk (r - s - 1) % p to the right, which adds it to its own copy. For
        p = 3 (chunk indices sent at each step):

            step 0:  device 0 sends chunk 2,  device 1 sends chunk 0,  device 2 sends chunk 1
            step 1:  device 0 sends chunk 1,  device 1 sends chunk 2,  device 2 sends chunk 0

        After p - 1 steps the last chunk device r received, chunk r, holds every device's part. Each device sent
        p - 1 chunks of n / p bytes: **(p - 1) / p n**, whatever p is.
        '''),
    check_cell("sharding", "reduce_scatter"),
    md('''
        ## 2. All-gather

        The reverse: device r holds piece r, and every device should end with all the pieces in order,
        `torch.cat(xs, dim)`. Round the ring again: at step s, device r passes on piece (r - s) % p (its own first,
        then the one it just received). Each device sends p - 1 pieces: (p - 1) / p of the gathered tensor.
        '''),
    check_cell("sharding", "all_gather"),
    md('''
        ## 3. All-reduce

        Every device should end with the whole sum: a reduce-scatter (device r has chunk r of the sum), then an
        all-gather of those chunks. That sends **2 (p - 1) / p n** per device, and no all-reduce can send less
        (Patarasuk and Yuan, 2009): the bandwidth cost hardly grows with p. Passing whole tensors round the ring
        instead sends (p - 1) n, which grows with every device added.
        '''),
    check_cell("sharding", "all_reduce"),
    md(r'''
        ## 4. Column-parallel linear

        $y = x W^\top + b$ with $W$ of shape (out, in). Split $W$'s rows, the **output features**, over the devices:
        device r holds `weight.chunk(p, dim=0)[r]`, of shape (out / p, in), and computes its own slice of y's
        features from the whole x, with no communication at all. If the next operation needs all of y, an
        all-gather along the last dimension puts the slices together (`gather=True`).
        '''),
    check_cell("sharding", "column_parallel"),
    md(r'''
        ## 5. Row-parallel linear, and Megatron's MLP

        Split $W$'s columns, the **input features**, instead: device r holds `weight.chunk(p, dim=1)[r]`,
        (out, in / p), and the matching slice of x. Its product is a *partial* y: y is the sum over devices, one
        all-reduce. The bias belongs to the sum, so it is added once.

        Megatron-LM's MLP puts the two together: column-parallel up-projection *without* gathering, the GELU on
        each device's slice (it is elementwise, so slices are fine), then row-parallel down-projection, whose
        inputs are exactly those slices. The hidden layer, 4 times wider than the model, never moves: **one
        all-reduce per MLP** forward (and one backward).
        '''),
    check_cell("sharding", "row_parallel"),
    md('''
        ## 6. Your all-reduce, counted

        The same 210 KiB tensor on 1 to 8 devices: the bytes each device sent with your `all_reduce`, against the
        ring formula and against passing whole tensors round the ring.
        '''),
    code('''
        import matplotlib.pyplot as plt
        from llmlab.train.collectives import FORMULAS

        n_rows, ps, measured = 840, range(1, 9), []  # 840 rows split evenly over 1..8 devices
        for p in ps:
            net = Network(p)
            xs = [torch.randn(n_rows, 64) for _ in range(p)]
            out = lab.all_reduce(xs, net)
            assert all(torch.allclose(o, sum(xs), atol=1e-5) for o in out)
            measured.append(net.sent[0])
        n = n_rows * 64 * 4
        print(f"n = {n} bytes; device 0 sent", dict(zip(ps, measured)))
        plt.figure(figsize=(6, 3.5))
        plt.plot(ps, [FORMULAS["all_reduce"](n, p) / n for p in ps], "-", label="ring formula 2 (p - 1) / p n")
        plt.plot(ps, [m / n for m in measured], "o", label="your all_reduce, measured")
        plt.plot(ps, [(p - 1) for p in ps], ":", label="whole tensors round the ring, (p - 1) n")
        plt.xlabel("devices p")
        plt.ylabel("bytes sent per device / n")
        plt.ylim(0, 4)
        plt.grid(alpha=0.3)
        plt.legend();
        '''),
    md('''
        ## 7. Your tensor-parallel MLP inside llmlab's decoder

        Every MLP of a small byte-level llmlab decoder (GPT-2's: up-projection, GELU, down-projection) is replaced
        by the same weights split over 4 simulated devices and run by your `column_parallel(..., gather=False)`
        and `row_parallel`. Two copies start from the same weights and train on the same batches of Python's
        source code, one with llmlab's MLP and one with yours: the loss curves should lie on top of each other.
        The bytes of one forward pass are counted too: per MLP, one all-reduce of the (tokens, n_embd) output.
        '''),
    code('''
        import torch.nn.functional as F
        from llmlab.labs.experiments import compare_training, plot_runs, use_module


        class TensorParallelMLP(torch.nn.Module):
            """llmlab's GeluMLP with its two matmuls split over p simulated devices by your code."""

            def __init__(self, mlp, p, send):
                super().__init__()
                self.up_proj, self.down_proj, self.p, self.send = mlp.up_proj, mlp.down_proj, p, send

            def forward(self, x):
                B, T, C = x.shape
                hidden = lab.column_parallel(x.reshape(B * T, C), self.up_proj.weight, self.up_proj.bias, self.p,
                                             self.send, gather=False)  # p slices (B * T, 4C / p)
                hidden = [F.gelu(h, approximate="tanh") for h in hidden]
                y = lab.row_parallel(hidden, self.down_proj.weight, self.down_proj.bias, self.send)
                return y[0].reshape(B, T, C)  # every device holds the same y


        net = Network(4)
        runs = compare_training({
            "llmlab's MLP": lambda model: model,
            "your MLP on 4 devices": lambda model: use_module(model, "GeluMLP",
                                                              lambda mlp: TensorParallelMLP(mlp, 4, net)),
        }, steps=100)
        gap = max(abs(a - b) for a, b in zip(runs[0].losses, runs[1].losses))
        print(f"largest gap between the two loss curves: {gap:.2g} nats")

        model, idx = runs[1].model, torch.randint(0, 256, (16, 64))  # one training batch: 16 x 64 tokens
        net.sent = [0] * 4
        with torch.no_grad():
            model(idx)
        n = 16 * 64 * model.config.n_embd * 4  # bytes of one MLP's output, float32
        expected = model.config.n_layer * FORMULAS["all_reduce"](n, 4)
        print(f"one forward pass: each device sent {net.sent[0]} bytes; {model.config.n_layer} all-reduces of "
              f"{n} bytes on 4 devices: {expected:.0f}")
        plot_runs(runs, "llmlab's decoder with your tensor-parallel MLP");
        '''),
    md('''
        ## Done?

        `check("sharding")` runs every check. The same algorithms across real processes: `llmlab compare sharding`
        runs llmlab's ring collectives (`llmlab.train.collectives.Comm`, over torch.distributed point-to-point
        sends) and its column- and row-parallel layers (`llmlab.train.sharded`) on several CPU processes, with the
        bytes of each collective measured, and backward passes with their own collectives. Next on the path:
        `llmlab labs start scaling-fit`.
        '''),
    check_cell("sharding"),
]
