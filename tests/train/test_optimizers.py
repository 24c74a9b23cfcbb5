"""The optimizers written out: step for step equal to torch.optim and transformers, Lion to its paper's rule,
Muon's Newton-Schulz to the SVD polar factor; they train, checkpoint and resume; bad hyperparameters refused."""

import math

import pytest
import torch
import torch.nn as nn

from llmlab.common.errors import UserError
from llmlab.models import Transformer, get_preset
from llmlab.recipes.pretrain import PretrainArgs
from llmlab.recipes.pretrain import run as pretrain
from llmlab.train.objectives import causal_lm_loss
from llmlab.train.optimizers import (
    NS_COEFFICIENTS,
    OPTIMIZERS,
    SGD,
    Adafactor,
    Adam,
    AdamW,
    HyperparameterError,
    Lion,
    Muon,
    build_optimizer,
    muon_param_groups,
    newton_schulz,
)


def _problem(seed: int = 0) -> nn.Module:
    """A small regression net with matrices, biases and a 3-D weight, so every code path (1-D, 2-D, factored
    over leading dims) gets gradients."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))
    net.register_parameter("cube", nn.Parameter(torch.randn(2, 3, 4)))
    return net


def _train(make_opt, steps: int = 60, seed: int = 0) -> tuple[list[float], list[torch.Tensor]]:
    """Train a fresh `_problem(seed)` on random batches (the same ones for every optimizer)."""
    net = _problem(seed)
    opt = make_opt(net.parameters())
    gen = torch.Generator().manual_seed(seed + 1)
    losses = []
    for _ in range(steps):
        x, y = torch.randn(8, 6, generator=gen), torch.randn(8, 4, generator=gen)
        loss = (net(x) - y).pow(2).mean() + net.cube.pow(2).sum() * 0.01 + net.cube.sum().sin()
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses, [p.detach().clone() for p in net.parameters()]


def _assert_same(ours, theirs, exact: bool = False) -> None:
    assert len(ours[0]) == len(theirs[0])
    for a, b in zip(ours[1], theirs[1], strict=True):
        if exact:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    start = [p.detach() for p in _problem().parameters()]
    assert all(a.ne(b).any() for a, b in zip(ours[1], start, strict=True))  # every tensor moved


@pytest.mark.parametrize("kw", [dict(lr=0.05), dict(lr=0.05, momentum=0.9), dict(lr=0.02, momentum=0.9, nesterov=True),
                                dict(lr=0.05, momentum=0.5, weight_decay=0.1)])
def test_sgd_equals_torch(kw):
    _assert_same(_train(lambda p: SGD(p, **kw)), _train(lambda p: torch.optim.SGD(p, **kw)), exact=True)


@pytest.mark.parametrize("ours, theirs, kw", [
    (Adam, torch.optim.Adam, dict(lr=1e-2)),
    (Adam, torch.optim.Adam, dict(lr=3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
    (AdamW, torch.optim.AdamW, dict(lr=1e-2)),
    (AdamW, torch.optim.AdamW, dict(lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)),
])
def test_adam_and_adamw_equal_torch(ours, theirs, kw):
    # bit for bit against torch's default (the for-each kernels), to a tight tolerance against the plain loop
    _assert_same(_train(lambda p: ours(p, **kw), steps=200), _train(lambda p: theirs(p, **kw), steps=200), exact=True)
    _assert_same(_train(lambda p: ours(p, **kw)), _train(lambda p: theirs(p, foreach=False, **kw)))


def test_lion_follows_its_published_rule():
    """Chen et al. 2023, Program 1, computed here without the optimizer."""
    lr, (b1, b2), wd = 3e-3, (0.9, 0.99), 0.5
    net = _problem()
    params = [p.detach().clone() for p in net.parameters()]
    moments = [torch.zeros_like(p) for p in params]

    def make(p):
        return Lion(p, lr=lr, betas=(b1, b2), weight_decay=wd)

    losses, trained = _train(make, steps=40)
    gen = torch.Generator().manual_seed(1)
    for _ in range(40):  # replay the same batches on a functional copy
        x, y = torch.randn(8, 6, generator=gen), torch.randn(8, 4, generator=gen)
        leaves = [p.requires_grad_() for p in params]
        cube, w1, b1_, w2, b2_ = leaves  # the Sequential's own parameter comes before its children's
        out = torch.tanh(x @ w1.T + b1_) @ w2.T + b2_
        loss = (out - y).pow(2).mean() + cube.pow(2).sum() * 0.01 + cube.sum().sin()
        grads = torch.autograd.grad(loss, leaves)
        with torch.no_grad():
            update = [torch.sign(b1 * m + (1 - b1) * g) for m, g in zip(moments, grads, strict=True)]
            params = [p - lr * (u + wd * p) for p, u in zip(params, update, strict=True)]
            moments = [b2 * m + (1 - b2) * g for m, g in zip(moments, grads, strict=True)]
    for a, b in zip(trained, params, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("kw", [
    dict(),  # the paper's defaults: relative step, parameter scale, no first moment
    dict(warmup_init=True, weight_decay=0.01),
    dict(lr=1e-2, relative_step=False, scale_parameter=False),
    dict(lr=3e-2, relative_step=False, beta1=0.9, clip_threshold=0.5, decay_rate=-0.6, weight_decay=0.1),
])
def test_adafactor_equals_transformers(kw):
    from transformers.optimization import Adafactor as HFAdafactor

    ours, theirs = _train(lambda p: Adafactor(p, **kw), steps=80), _train(lambda p: HFAdafactor(p, **kw), steps=80)
    _assert_same(ours, theirs)


def test_adafactor_factors_matrices():
    net = _problem()
    opt = Adafactor(net.parameters())
    net[2](torch.randn(3, 16)).sum().backward()
    opt.step()
    state = opt.state[net[2].weight]  # (4, 16): 4 + 16 numbers of second moment, not 64
    assert state["exp_avg_sq_row"].shape == (4,) and state["exp_avg_sq_col"].shape == (16,)
    assert "exp_avg_sq" in opt.state[net[2].bias] and "exp_avg" not in state


def _with_singular_values(s: torch.Tensor, rows: int, cols: int, seed: int = 0):
    torch.manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(rows, len(s)))
    V, _ = torch.linalg.qr(torch.randn(cols, len(s)))
    return U @ torch.diag(s) @ V.T, U, V


@pytest.mark.parametrize("rows, cols", [(64, 64), (96, 32), (24, 80)])
def test_newton_schulz_is_the_polar_factor_roughly(rows, cols):
    k = min(rows, cols)
    s = torch.logspace(0, -2, k)  # condition number 100
    G, U, V = _with_singular_values(s, rows, cols)
    X = newton_schulz(G)
    assert X.shape == G.shape
    polar = U @ V.T  # what SVD says the nearest orthogonal matrix is
    cosine = (X * polar).sum() / (X.norm() * polar.norm())
    assert cosine > 0.97
    got = torch.linalg.svdvals(X)
    assert got.min() > 0.65 and got.max() < 1.25  # the band the quintic leaves them in, not exactly 1
    # the singular vectors are G's, and each singular value went through the scalar polynomial 5 times
    a, b, c = NS_COEFFICIENTS
    x = s / s.norm()
    for _ in range(5):
        x = a * x + b * x ** 3 + c * x ** 5
    core = U.T @ X @ V  # (k, k): diagonal
    torch.testing.assert_close(torch.diagonal(core), x, atol=2e-4, rtol=1e-4)
    assert (core - torch.diag(torch.diagonal(core))).abs().max() < 1e-3


def test_newton_schulz_refuses_non_matrices():
    with pytest.raises(ValueError, match="matrices"):
        newton_schulz(torch.randn(5))


@pytest.mark.parametrize("rows, cols", [(32, 32), (48, 16), (16, 40)])
def test_newton_schulz_of_a_stack_is_each_matrix_on_its_own(rows, cols):
    g = torch.Generator().manual_seed(0)
    stack = torch.randn(3, rows, cols, generator=g) * torch.tensor([1e-3, 1.0, 50.0]).view(3, 1, 1)
    together = newton_schulz(stack)
    assert together.shape == stack.shape
    for G, X in zip(stack, together, strict=True):
        torch.testing.assert_close(X, newton_schulz(G), atol=1e-5, rtol=1e-5)


def test_muon_param_groups_on_a_transformer():
    for preset in ("llama-tiny", "gpt2-tiny"):
        model = Transformer(get_preset(preset, vocab_size=50, seq_len=16, n_layer=2))
        muon, decay, no_decay = muon_param_groups(model, 0.1)
        names = {id(p): n for n, p in model.named_parameters()}  # a tied weight under its first name, tok_emb
        assert muon["muon"] and not decay["muon"] and no_decay["weight_decay"] == 0.0
        assert all(names[id(p)].startswith("blocks.") and p.dim() == 2 for p in muon["params"])
        assert any("tok_emb" in names[id(p)] for p in no_decay["params"])
        in_groups = [id(p) for g in (muon, decay, no_decay) for p in g["params"]]
        assert sorted(in_groups) == sorted({id(p) for p in model.parameters()})  # each parameter once
        head = model.lm_head.weight
        assert id(head) not in {id(p) for p in muon["params"]}
        if not model.config.tie_embeddings:
            assert id(head) in {id(p) for p in decay["params"]}


def test_muon_trains_a_tiny_model():
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", vocab_size=50, seq_len=16, n_layer=2))
    opt = build_optimizer("muon", model, lr=1e-2, weight_decay=0.0)
    idx = torch.randint(0, 50, (4, 17))
    first = causal_lm_loss(model(idx[:, :-1]), idx[:, 1:]).item()
    for _ in range(40):
        loss = causal_lm_loss(model(idx[:, :-1]), idx[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.3 * first
    buf = opt.state[model.blocks[0].attn.q_proj.weight if hasattr(model.blocks[0].attn, "q_proj")
                    else next(model.blocks[0].parameters())]
    assert set(buf) <= {"momentum_buffer", "step", "exp_avg", "exp_avg_sq"}


def test_muon_step_is_the_rule_for_each_matrix():
    """Two steps of Muon over matrices of two shapes (orthogonalised in stacks) against the rule, one matrix at
    a time: Nesterov momentum, Newton-Schulz, decoupled decay, the match-AdamW scale."""
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(*shape, generator=g) for shape in ((8, 12), (8, 12), (12, 8), (8, 12))]
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    opt = Muon([{"params": params, "muon": True}], lr=0.1, momentum=0.9, weight_decay=0.05)
    bufs = [torch.zeros_like(w) for w in weights]
    for _ in range(2):
        grads = [torch.randn(w.shape, generator=g) for w in weights]
        for p, grad in zip(params, grads, strict=True):
            p.grad = grad.clone()
        opt.step()
        for i, (w, grad) in enumerate(zip(weights, grads, strict=True)):
            bufs[i] = 0.9 * bufs[i] + 0.1 * grad
            update = newton_schulz(0.1 * grad + 0.9 * bufs[i])
            weights[i] = w * (1 - 0.1 * 0.05) - 0.1 * 0.2 * math.sqrt(12) * update
    for p, w in zip(params, weights, strict=True):
        torch.testing.assert_close(p.detach(), w, atol=1e-5, rtol=1e-5)


def test_every_optimizer_lowers_the_loss():
    idx = torch.randint(0, 50, (4, 17), generator=torch.Generator().manual_seed(0))
    lrs = {"sgd": 0.3, "lion": 1e-3}
    for name in OPTIMIZERS:
        torch.manual_seed(0)
        model = Transformer(get_preset("llama-tiny", vocab_size=50, seq_len=16, n_layer=1))
        opt = build_optimizer(name, model, lr=lrs.get(name, 1e-2))
        losses = []
        for _ in range(15):
            loss = causal_lm_loss(model(idx[:, :-1]), idx[:, 1:])
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        assert losses[-1] < 0.8 * losses[0], name


@pytest.mark.parametrize("make, match", [
    (lambda p: SGD(p, lr=-1.0), "lr must be at least 0"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), "nesterov needs a momentum"),
    (lambda p: SGD(p, lr=0.1, momentum=1.5), "momentum must be in"),
    (lambda p: Adam(p, lr=-1e-3), "lr must be at least 0"),
    (lambda p: Adam(p, betas=(0.9, 1.0)), r"betas must be two numbers in \[0, 1\)"),
    (lambda p: AdamW(p, betas=(-0.1, 0.9)), "betas must be"),
    (lambda p: AdamW(p, weight_decay=-0.1), "weight_decay must be at least 0"),
    (lambda p: Lion(p, betas=(0.9, 1.2)), "betas must be"),
    (lambda p: Adafactor(p, lr=1e-3), "relative_step computes its own lr"),
    (lambda p: Adafactor(p, relative_step=False), "needs an lr"),
    (lambda p: Adafactor(p, beta1=1.0), "beta1 must be None or in"),
    (lambda p: Muon(p, lr=-1.0), "lr must be at least 0"),
    (lambda p: Muon(p, momentum=1.0), "momentum must be in"),
    (lambda p: Muon(p, scale="huge"), "scale must be one of"),
    (lambda p: Muon(p), "Muon orthogonalises matrices only"),  # biases in a muon group
])
def test_bad_hyperparameters_are_refused(make, match):
    with pytest.raises(HyperparameterError, match=match) as info:
        make(_problem().parameters())
    assert isinstance(info.value, ValueError) and isinstance(info.value, UserError)


def test_unknown_optimizer_is_refused():
    with pytest.raises(UserError, match="unknown 'rmsprop'; choose one of adamw"):
        build_optimizer("rmsprop", _problem(), lr=1e-3)


def _cfg(data_dir, out, **kw) -> PretrainArgs:
    base = dict(data=str(data_dir), out=str(out), preset="llama-tiny", seq_len=32, batch_size=4, lr=3e-3,
                warmup_steps=2, max_steps=6, eval_interval=3, eval_tokens=256, ckpt_interval=3, device="cpu",
                progress=False)
    return PretrainArgs(**{**base, **kw})


@pytest.mark.parametrize("optimizer", ["muon", "adafactor"])
def test_pretrain_resumes_exactly_with(optimizer, data_dir, tmp_path):
    straight = pretrain(_cfg(data_dir, tmp_path / "straight", optimizer=optimizer))
    pretrain(_cfg(data_dir, tmp_path / "split", optimizer=optimizer, stop_at=3))
    resumed = pretrain(_cfg(data_dir, tmp_path / "split", optimizer=optimizer, resume=True))
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in straight["history"]]
    resumed_weights = resumed["model"].state_dict()
    for name, weight in straight["model"].state_dict().items():
        assert torch.equal(weight, resumed_weights[name]), name
    with pytest.raises(UserError, match="other settings.*optimizer"):
        pretrain(_cfg(data_dir, tmp_path / "split", optimizer="lion", max_steps=9, resume=True))
