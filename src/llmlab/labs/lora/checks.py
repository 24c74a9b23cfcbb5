"""Lab: LoRA, the checks. The reference is the formula base(x) + (alpha / rank) x A^T B^T on the learner's own
A and B, torch's autograd for the gradients, and llmlab's decoder for `add_lora`. Typical mistakes (a scale of
alpha instead of alpha / rank, B random, the base still training) are computed and named when matched.
"""

import torch
import torch.nn as nn

from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call, close, diagnose, expect_tensor
from llmlab.models import Transformer, get_preset

CHECKS = CheckList()


def _make(ws: Workspace, base: nn.Linear, rank: int, alpha: float) -> nn.Module:
    m = call(ws.get("LoRALinear"), base, rank, alpha)
    if not isinstance(m, nn.Module):
        raise CheckFailed("LoRALinear must subclass torch.nn.Module")
    for name in ("A", "B"):
        if not isinstance(getattr(m, name, None), torch.Tensor):
            raise CheckFailed(f"no self.{name}: create it as an nn.Parameter in __init__")
    return m


def _randomise(m: nn.Module) -> None:
    """Give B (and A) random values, as after some training, so the low-rank path shows in the output."""
    with torch.no_grad():
        m.A.copy_(torch.randn_like(m.A))
        m.B.copy_(torch.randn_like(m.B))


def _expected(m, base, x, scale):
    return base(x) + scale * (x @ m.A.T @ m.B.T)


@CHECKS.add("LoRALinear", "A (rank, in) random and B (out, rank) zeros are trainable parameters; base is frozen")
def lora_parameters(ws: Workspace) -> None:
    base = nn.Linear(10, 6)
    m = _make(ws, base, 4, 8.0)
    if tuple(m.A.shape) != (4, 10):
        raise CheckFailed(f"A should be (rank, in_features) = (4, 10), found {tuple(m.A.shape)}")
    if tuple(m.B.shape) != (6, 4):
        raise CheckFailed(f"B should be (out_features, rank) = (6, 4), found {tuple(m.B.shape)}")
    registered = {id(p) for p in m.parameters()}
    for name in ("A", "B"):
        if not isinstance(getattr(m, name), nn.Parameter) or id(getattr(m, name)) not in registered:
            raise CheckFailed(f"{name} is not a registered parameter: self.{name} = nn.Parameter(...)")
        if not getattr(m, name).requires_grad:
            raise CheckFailed(f"{name} is frozen: the adapter's matrices are what trains")
    if bool((m.B != 0).any()):
        raise CheckFailed("B must start at zeros, so a fresh adapter changes nothing")
    if not bool((m.A != 0).any()):
        raise CheckFailed("A starts at zeros too: then no gradient reaches B and nothing trains; initialise A "
                          "randomly")
    if getattr(m, "base", None) is not base:
        raise CheckFailed("keep the layer you were given as self.base")
    training = [n for n, p in base.named_parameters() if p.requires_grad]
    if training:
        raise CheckFailed(f"base.{training[0]} still trains: freeze base with base.requires_grad_(False)")
    n_trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
    if n_trainable != 4 * (10 + 6):
        raise CheckFailed(f"{n_trainable} trainable numbers; LoRA of rank 4 on a 10 -> 6 layer has "
                          "4 * (10 + 6) = 64")


@CHECKS.add("LoRALinear", "forward is base(x) + (alpha / rank) x A^T B^T (and base(x) when fresh)")
def lora_forward(ws: Workspace) -> None:
    base = nn.Linear(10, 6)
    m = _make(ws, base, 4, 8.0)
    x = torch.randn(3, 5, 10)
    with torch.no_grad():
        fresh = expect_tensor(call(m, x), (3, 5, 6), "LoRALinear(x)")
        if not close(fresh, base(x)):
            if close(fresh, torch.zeros_like(fresh)):
                raise CheckFailed("base(x) is missing: the frozen layer's output comes first, the update is added")
            raise CheckFailed("a fresh adapter (B = 0) must return exactly base(x)")
        _randomise(m)
        out = expect_tensor(call(m, x), (3, 5, 6), "LoRALinear(x)")
        low_rank = x @ m.A.T @ m.B.T
        diagnose(out, _expected(m, base, x, 2.0), {
            "your update is scaled by alpha instead of alpha / rank": base(x) + 8.0 * low_rank,
            "your update is scaled by rank / alpha; it is alpha / rank": base(x) + 0.5 * low_rank,
            "the low-rank update is not scaled: multiply it by alpha / rank": base(x) + low_rank,
            "base(x) is missing: the frozen layer's output comes first": (2.0 * low_rank, 2.0 * low_rank + base.bias),
            "the bias is added twice": base(x) + 2.0 * low_rank + base.bias,
        }, "differs from base(x) + (alpha / rank) * x @ A.T @ B.T")


@CHECKS.add("LoRALinear", "every shape (a vector, rank 1, no bias), gradients reach A and B and not base")
def lora_shapes_and_gradients(ws: Workspace) -> None:
    for in_f, out_f, rank, bias, x_shape in ((7, 3, 1, False, (7,)), (5, 9, 2, True, (2, 4, 5)),
                                             (1, 1, 1, True, (3, 1))):
        base = nn.Linear(in_f, out_f, bias=bias)
        m = _make(ws, base, rank, 4.0)
        _randomise(m)
        x = torch.randn(x_shape)
        out = expect_tensor(call(m, x), x_shape[:-1] + (out_f,),
                            f"for a {in_f} -> {out_f} layer of rank {rank}, LoRALinear")
        expected = _expected(m, base, x, 4.0 / rank)
        if not close(out, expected):
            raise CheckFailed(f"wrong for a {in_f} -> {out_f} layer of rank {rank} on x of shape {x_shape}")
        g = torch.randn_like(out)
        ours = torch.autograd.grad((out * g).sum(), [m.A, m.B], allow_unused=True)
        ref = torch.autograd.grad((expected * g).sum(), [m.A, m.B])
        for name, a, b in zip("AB", ours, ref, strict=True):
            if a is None or not close(a, b):
                raise CheckFailed(f"the gradient for {name} differs from autograd's through the formula")
        if base.weight.requires_grad:
            raise CheckFailed("base.weight trains after a forward: the base must stay frozen")


@CHECKS.add("LoRALinear", "merge() returns a plain nn.Linear with the same outputs")
def lora_merge(ws: Workspace) -> None:
    for bias in (True, False):
        base = nn.Linear(8, 5, bias=bias)
        m = _make(ws, base, 2, 6.0)
        _randomise(m)
        x = torch.randn(4, 8)
        with torch.no_grad():
            before = call(m, x)
            merged = call(m.merge)
            if type(merged) is not nn.Linear:
                raise CheckFailed(f"merge() returned {type(merged).__name__}, not a new torch.nn.Linear")
            if (merged.bias is None) != (not bias):
                raise CheckFailed("the merged layer should have a bias exactly when base has one")
            out = merged(x)
            diagnose(out, before, {
                "the merged weight forgot the scale alpha / rank: W + (alpha / rank) * B @ A":
                    base(x) + x @ (m.B @ m.A).T,
                "the merged weight is scaled by alpha, not alpha / rank": base(x) + 6.0 * x @ (m.B @ m.A).T,
            }, "the merged layer's outputs differ from the adapter's")


@CHECKS.add("add_lora", "wraps each targeted linear layer of an llmlab decoder; everything else frozen")
def add_lora_model(ws: Workspace) -> None:
    torch.manual_seed(0)
    model = Transformer(get_preset("gpt2-tiny", vocab_size=64, seq_len=16, n_layer=2, n_embd=16, n_head=2))
    idx = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        before = model(idx)
    returned = call(ws.get("add_lora"), model, 4, 8.0, targets=("q_proj", "v_proj"))
    if returned is not model:
        raise CheckFailed("add_lora should change the model in place and return it")
    wrapped = [n for n, m in model.named_modules() if hasattr(m, "base") and isinstance(m.base, nn.Linear)]
    expected = [f"blocks.{i}.attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    if sorted(wrapped) != sorted(expected):
        got = ", ".join(sorted(wrapped)[:5]) + (", ..." if len(wrapped) > 5 else "") if wrapped else "nothing"
        raise CheckFailed(f"wrapped {got}; expected {', '.join(expected)}")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable != 4 * 4 * (16 + 16):
        others = [n for n, p in model.named_parameters() if p.requires_grad and not n.endswith(("A", "B"))]
        hint = f": {others[0]} still trains; freeze the model first" if others else ""
        raise CheckFailed(f"{trainable} trainable numbers, expected 4 layers * rank 4 * (16 + 16) = 512{hint}")
    with torch.no_grad():
        if not close(model(idx), before):
            raise CheckFailed("the model's logits changed when the adapters were added (B should start at zeros)")
