"""The end of a lab's notebook: the learner's code inside llmlab's real model, trained next to llmlab's own.

`compare_training(edits)` trains copies of one small byte-level decoder on the same batches from the same
initial weights, each changed in place by its edit: llmlab's model as it is, and the learner's attention,
norm or MLP swapped in (`use_attention`, `use_norm`, `use_module`), or their LoRA layers added. Equal
components give loss curves that lie on top of each other; a wrong one shows.
`plot_runs` draws them. The text is the start of the default corpus (Python's own sources), read as bytes,
so nothing needs a tokenizer or a download. This file does not check anything: that is each lab's checks.py.
"""

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from llmlab.data.sources import default_corpus, leading_text
from llmlab.models import Transformer, get_preset
from llmlab.models.layers import Attention, apply_rope, repeat_kv
from llmlab.models.swap import find_modules, replace_module
from llmlab.train.loop import LoopSettings, TrainState, train_loop
from llmlab.train.objectives import lm_loss
from llmlab.train.optim import make_adamw


class FunctionAttention(nn.Module):
    """A decoder's attention layer whose core, softmax(q k^T / sqrt(D)) v, is `fn(q, k, v, causal=True)`.

    The projections, the grouped key/value heads and (unless `rotate` is given) RoPE stay llmlab's (the
    wrapped `layer`'s); only plain causal self-attention is supported (no padding mask, KV cache or ALiBi).
    """

    def __init__(self, layer: Attention, fn: Callable, rotate: Callable | None = None, theta: float = 10000.0):
        super().__init__()
        self.layer, self.fn, self.rotate, self.theta = layer, fn, rotate, theta

    def forward(self, x, rope, mask, kv_cache, layer, bias=None) -> torch.Tensor:
        if mask is not None or kv_cache is not None or bias is not None:
            raise ValueError("a learner's attention runs plain causal self-attention only: no padding mask, "
                             "KV cache or ALiBi bias")
        a = self.layer
        B, T, _ = x.shape
        q = a.q_proj(x).view(B, T, a.n_head, a.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = a.k_proj(x).view(B, T, a.n_kv_head, a.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = a.v_proj(x).view(B, T, a.n_kv_head, a.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        if rope is not None and self.rotate is not None:  # the learner's RoPE, positions 0..T-1
            positions = torch.arange(T, device=x.device)
            q, k = self.rotate(q, positions, theta=self.theta), self.rotate(k, positions, theta=self.theta)
        elif rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        n_rep = a.n_head // a.n_kv_head
        y = self.fn(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), causal=True)  # (B, H, T, D)
        return a.o_proj(y.transpose(1, 2).reshape(B, T, a.n_head * a.head_dim))  # (B, T, C)


def use_attention(model: Transformer, fn: Callable, rotate: Callable | None = None) -> Transformer:
    """Make every block of `model` compute its attention with `fn(q, k, v, causal=True)`, in place; and with
    `rotate(x, positions, theta=...)` in place of llmlab's RoPE, if given (a RoPE model's)."""
    for name in find_modules(model, (Attention,)):
        replace_module(model, name, FunctionAttention(model.get_submodule(name), fn, rotate, model.config.rope_theta))
    return model


def use_module(model: Transformer, kind: str, make: Callable[[nn.Module], nn.Module]) -> Transformer:
    """Replace every module of `model` whose class is named `kind` ("GeluMLP", "RMSNorm") by `make(old)`,
    with the old one's weights loaded into it (so the names of its parameters must match), in place."""
    for name in [n for n, m in model.named_modules() if type(m).__name__ == kind]:
        old = model.get_submodule(name)
        new = make(old)
        if new is not old:
            new.load_state_dict(old.state_dict())
            replace_module(model, name, new)
    return model


def use_norm(model: Transformer, cls: type) -> Transformer:
    """Every norm of `cls`'s name (LayerNorm or RMSNorm) becomes `cls(dim, eps=...)`, weights kept."""
    return use_module(model, cls.__name__, lambda old: old if type(old) is cls else cls(old.weight.shape[0],
                                                                                        eps=old.eps))


@dataclass
class Run:
    label: str
    losses: list[float]
    held_out: float  # measured on fixed held-out data after training: a loss, or a share for `measure`
    seconds: float
    model: nn.Module | None = field(repr=False)
    measure: str = "held-out loss"  # what held_out is


def _rows(data: torch.Tensor, n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, len(data) - length, (n,), generator=generator)
    return torch.stack([data[s:s + length] for s in starts.tolist()]).long()  # (n, length)


def _windows(data: torch.Tensor, n: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    rows = _rows(data, n, seq_len + 1, generator)  # (n, T + 1)
    return rows[:, :-1], rows[:, 1:]  # idx, targets: (n, T) each


def corpus_bytes(prefix: str = "stdlib/", max_chars: int = 400_000) -> torch.Tensor:
    """The default corpus's documents whose names start with `prefix` ("stdlib/": Python's sources, "pydoc/":
    its English help topics), as one uint8 tensor of about `max_chars` bytes."""
    docs = [d for d in default_corpus() if d[0].startswith(prefix)]
    return torch.frombuffer(bytearray(leading_text(docs, max_chars).encode("utf-8")), dtype=torch.uint8)


def _train(model: nn.Module, data: torch.Tensor, steps: int, batch_size: int, seq_len: int, lr: float, seed: int,
           progress: bool) -> list[float]:
    generator = torch.Generator().manual_seed(seed)  # the same batches for every model
    optimizer = make_adamw(model, lr, 0.01, device_type="cpu")
    settings = LoopSettings(max_steps=steps, lr=lr, warmup_steps=min(10, steps // 4), progress=progress)
    state = train_loop(model, optimizer, lambda: _windows(data, batch_size, seq_len, generator), settings,
                       TrainState())
    return [r["loss"] for r in state.history]


def compare_training(edits: dict[str, Callable[[Transformer], object]], steps: int = 120, pretrain_steps: int = 0,
                     data: str = "stdlib/", preset: str = "gpt2-tiny", n_layer: int = 2, n_embd: int = 64,
                     n_head: int = 4, seq_len: int = 64, batch_size: int = 16, lr: float = 3e-3, seed: int = 0,
                     progress: bool = True) -> list[Run]:
    """One run per entry of `edits` (label -> a function changing a model in place), each from a copy of the
    same model, on the same batches of `data` (a `corpus_bytes` prefix).

    pretrain_steps: first train the shared model that long on Python's sources (a base to fine-tune).
    The defaults take about ten seconds per run on one laptop core: a 2-block byte-level decoder, which is
    enough for the curves to fall well below the uniform loss ln 256 = 5.5.
    """
    torch.manual_seed(seed)
    config = get_preset(preset, vocab_size=256, seq_len=seq_len, n_layer=n_layer, n_embd=n_embd, n_head=n_head)
    base = Transformer(config)
    if pretrain_steps:
        _train(base, corpus_bytes("stdlib/"), pretrain_steps, batch_size, seq_len, lr, seed + 2, progress)
    text = corpus_bytes(data)
    split = int(0.9 * len(text))
    held_out = _windows(text[split:], 32, seq_len, torch.Generator().manual_seed(seed + 1))
    runs = []
    for label, edit in edits.items():
        model = copy.deepcopy(base)
        edit(model)
        start = time.perf_counter()
        losses = _train(model, text[:split], steps, batch_size, seq_len, lr, seed, progress)
        seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            loss = float(lm_loss(model, held_out))
        runs.append(Run(label, losses, loss, seconds, model))
    return runs


@torch.no_grad()
def held_out_loss(model: Transformer, data: str = "stdlib/", seed: int = 0) -> float:
    """The loss on the held-out windows `compare_training` reports for the same `data` and `seed`."""
    text = corpus_bytes(data)
    held_out = _windows(text[int(0.9 * len(text)):], 32, model.config.seq_len, torch.Generator().manual_seed(seed + 1))
    return float(lm_loss(model.eval(), held_out))


@torch.no_grad()
def with_weights(model: Transformer, fn: Callable[[torch.Tensor], torch.Tensor]) -> Transformer:
    """A copy of `model` with every block's linear weight w replaced by fn(w) (quantised, pruned); the
    embeddings and the head are left as they are."""
    model = copy.deepcopy(model)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.startswith("blocks."):
            module.weight.copy_(fn(module.weight.detach().clone()).to(module.weight.dtype))
    return model


def _pairs(data: torch.Tensor, n: int, prompt_len: int, completion_len: int,
           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n preference pairs as (idx, targets) of 2n rows, chosen rows then rejected rows, each (2n, P + C - 1):
    the chosen completion is the text's real continuation, the rejected one a window from elsewhere."""
    real = _rows(data, n, prompt_len + completion_len, generator)  # (n, P + C)
    elsewhere = _rows(data, n, completion_len, generator)  # (n, C)
    rows = torch.cat([real, torch.cat([real[:, :prompt_len], elsewhere], 1)])  # (2n, P + C)
    targets = rows[:, 1:].clone()
    targets[:, :prompt_len - 1] = -100  # only the completion is scored
    return rows[:, :-1], targets


def _completion_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logps = logits.log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]  # (B, T)
    return (logps * (targets != -100)).sum(-1)  # (B,)


def compare_dpo(methods: dict[str, tuple[Callable, Callable]], steps: int = 60, beta: float = 0.1,
                pretrain_steps: int = 0, n_pairs: int = 16, prompt_len: int = 24, completion_len: int = 8,
                lr: float = 1e-3, seed: int = 0, progress: bool = True) -> list[Run]:
    """DPO on the same pairs from the same model, one run per `methods` entry (label -> (completion_logprob,
    dpo_loss), the learner's or llmlab's). The chosen completion of a Python-source prompt is its real
    continuation, the rejected one text from elsewhere; held_out is the share of held-out pairs whose chosen
    completion gains more log-probability over the reference than the rejected one."""
    torch.manual_seed(seed)
    seq_len = prompt_len + completion_len
    base = Transformer(get_preset("gpt2-tiny", vocab_size=256, seq_len=seq_len, n_layer=2, n_embd=64, n_head=4))
    text = corpus_bytes("stdlib/")
    if pretrain_steps:
        _train(base, text, pretrain_steps, 16, seq_len, 3e-3, seed + 2, progress)
    reference = copy.deepcopy(base).eval().requires_grad_(False)
    split = int(0.9 * len(text))
    held_idx, held_targets = _pairs(text[split:], 64, prompt_len, completion_len, torch.Generator().manual_seed(1))
    runs = []
    for label, (logprob_fn, loss_fn) in methods.items():
        def dpo_step(model, batch, logprob_fn=logprob_fn, loss_fn=loss_fn):
            idx, targets = batch
            logps = logprob_fn(model(idx), targets)  # (2n,): chosen rows, then rejected rows
            with torch.no_grad():
                ref = logprob_fn(reference(idx), targets)
            return loss_fn(logps[:n_pairs], logps[n_pairs:], ref[:n_pairs], ref[n_pairs:], beta=beta)

        policy = copy.deepcopy(base)
        generator = torch.Generator().manual_seed(seed)
        settings = LoopSettings(max_steps=steps, lr=lr, warmup_steps=min(5, steps // 4), progress=progress)
        start = time.perf_counter()
        state = train_loop(policy, make_adamw(policy, lr, 0.0, device_type="cpu"),
                           lambda g=generator: _pairs(text[:split], n_pairs, prompt_len, completion_len, g),
                           settings, TrainState(), loss_fn=dpo_step)
        seconds = time.perf_counter() - start
        policy.eval()
        with torch.no_grad():
            margin = _completion_logps(policy(held_idx), held_targets) - _completion_logps(reference(held_idx),
                                                                                          held_targets)
        accuracy = float((margin[:64] > margin[64:]).float().mean())
        runs.append(Run(label, [r["loss"] for r in state.history], accuracy, seconds, policy,
                        measure="held-out preference accuracy"))
    return runs


def train_scalar_mlp(value_cls: type, label: str, steps: int = 40, hidden: int = 8, n_points: int = 40,
                     lr: float = 0.1, seed: int = 0) -> Run:
    """A 2 -> hidden -> 1 tanh network of `value_cls` scalars (the learner's Value, or llmlab's
    `llmlab.fundamentals.autograd.Value`) trained by gradient descent on llmlab's two moons with the hinge
    loss; the same seed gives the same weights and data for every engine. held_out: training accuracy."""
    from llmlab.fundamentals.autograd import make_moons

    rng = random.Random(seed)
    w1 = [[value_cls(rng.uniform(-1, 1)) for _ in range(2)] for _ in range(hidden)]
    b1 = [value_cls(0.0) for _ in range(hidden)]
    w2, b2 = [value_cls(rng.uniform(-1, 1)) for _ in range(hidden)], value_cls(0.0)
    params = [w for row in w1 for w in row] + b1 + w2 + [b2]
    points, labels = make_moons(n_points, noise=0.1, seed=seed)

    def score(p):
        h = [(row[0] * p[0] + row[1] * p[1] + b).tanh() for row, b in zip(w1, b1, strict=True)]
        return sum((w * x for w, x in zip(w2, h, strict=True)), b2)

    losses, start = [], time.perf_counter()
    for _ in range(steps):
        loss = sum(((1 - y * score(p)).relu() for p, y in zip(points, labels, strict=True)), value_cls(0.0))
        loss = loss * (1.0 / n_points)
        for q in params:
            q.grad = 0.0
        loss.backward()
        for q in params:
            q.data -= lr * q.grad
        losses.append(float(loss.data))
    accuracy = sum((score(p).data > 0) == (y > 0) for p, y in zip(points, labels, strict=True)) / n_points
    return Run(label, losses, accuracy, time.perf_counter() - start, None, measure="training accuracy")


@torch.no_grad()
def generate_text(model: Transformer, prompt: str, n_tokens: int, sample_fn: Callable, seed: int = 0,
                  **kwargs) -> str:
    """Continue `prompt` by `n_tokens` bytes, choosing each with `sample_fn(logits (1, V), generator=..., **kwargs)`
    (the learner's `sample`, or llmlab's); the same seed gives the same text for equal samplers."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    idx = torch.tensor([list(prompt.encode("utf-8"))])  # (1, T)
    for _ in range(n_tokens):
        logits = model(idx[:, -model.config.seq_len:], last_only=True)[:, -1]  # (1, V)
        nxt = sample_fn(logits, generator=generator, **kwargs)  # (1,)
        idx = torch.cat([idx, nxt.reshape(1, 1).long()], dim=1)
    return bytes(idx[0, -n_tokens:].tolist()).decode("utf-8", errors="replace")


def plot_runs(runs: list[Run], title: str = "training loss", path: str | None = None):
    """The runs' loss curves on one plot; saved to `path` if given. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for run, style in zip(runs, ("-", "--", ":", "-."), strict=False):
        ax.plot(range(1, len(run.losses) + 1), run.losses, style, linewidth=1.5,
                label=f"{run.label} ({run.measure} {run.held_out:.3f}, {run.seconds:.0f} s)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per byte)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
